"""HybridLM: token embedding -> one residual block per layout symbol -> RMSNorm -> LM head (tied by default)."""
import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from hybrid import layout as layouts
from hybrid.blocks import build_block
from hybrid.inference import InferenceCache


class HybridOutput(NamedTuple):
    """logits [batch, L, vocab]; aux_loss: the sum of the MoE blocks' balancing losses (scalar, 0 without MoE);
    expert_counts: {block index: [n_experts] tokens routed} for logging."""
    logits: torch.Tensor
    aux_loss: torch.Tensor
    expert_counts: dict[int, torch.Tensor]


def _plain(node) -> dict:
    """A config node (dict or OmegaConf) as a plain dict, so that Hydra-built and Python-built models agree."""
    try:
        from omegaconf import DictConfig, OmegaConf
        if isinstance(node, DictConfig):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:
        pass
    return dict(node or {})


class HybridLM(nn.Module):
    """A language model over a layout pattern.

    Args:
        vocab_size, d_model: sizes.
        layout: a pattern string ("MFMFAFMF", Megatron's "M-M*") or a mapping that `hybrid.layout.resolve`
            takes (pattern | n_layers + ratios | jamba period/offset).
        blocks: per-symbol keyword arguments of each mixer, e.g. {"M": {"d_state": 16}, "A": {"n_heads": 4}}.
        layer_overrides: {layer index: keyword arguments} merged over that layer's block config, e.g.
            {0: {"selective": False}} to make only the first Mamba block LTI.
        tie_embeddings: share the embedding matrix with the LM head.
        init_std: None (default): the width-aware init of init_weights; a number: every linear and embedding
            weight drawn from normal(0, init_std) instead (GPT-2 uses 0.02 at width 768).
        residual_in_fp32: keep the residual stream in fp32 whatever the weights' dtype (as mamba-ssm and
            Hugging Face's Mamba do); each block's norm still reads it in its weights' dtype. No effect in fp32.
    `init_args` holds the constructor's arguments as plain data: HybridLM(**model.init_args) rebuilds the
    same architecture (hybrid.convert saves it beside the weights).
    forward: tokens [batch, L] int64 -> HybridOutput.
    """

    def __init__(self, vocab_size: int, d_model: int, layout, blocks: Mapping | None = None,
                 layer_overrides: Mapping | None = None, tie_embeddings: bool = True, norm_eps: float = 1e-5,
                 init_std: float | None = None, residual_in_fp32: bool = False):
        super().__init__()
        if isinstance(layout, str):
            self.pattern, self.layout_source = layouts.parse(layout), "pattern"
        else:
            self.pattern, self.layout_source = layouts.resolve(_plain(layout))
        blocks = {k: _plain(v) for k, v in _plain(blocks).items()}
        overrides = {int(k): _plain(v) for k, v in _plain(layer_overrides).items()}
        self.init_args = dict(vocab_size=vocab_size, d_model=d_model,
                              layout=layout if isinstance(layout, str) else _plain(layout), blocks=blocks,
                              layer_overrides=overrides, tie_embeddings=tie_embeddings, norm_eps=norm_eps,
                              init_std=init_std, residual_in_fp32=residual_in_fp32)
        for i in overrides:
            if not 0 <= i < len(self.pattern):
                raise ValueError(f"layer_overrides index {i} is outside the pattern {self.pattern!r} "
                                 f"(0..{len(self.pattern) - 1})")
        self.vocab_size, self.d_model = vocab_size, d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            build_block(s, d_model, norm_eps, **{**blocks.get(s, {}), **overrides.get(i, {})})
            for i, s in enumerate(self.pattern))
        self.norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        self.init_std, self.residual_in_fp32 = init_std, residual_in_fp32
        self.apply(self.init_weights)

    def init_weights(self, module: nn.Module):
        """The one init, right at every width:
        - linear weights: normal(0, 1/sqrt(fan_in)) (LeCun normal), so a projection keeps its input's scale
          whatever the width (the scale of PyTorch's own nn.Linear default, std 1/sqrt(3 fan_in), is 1.7x smaller);
        - an untied embedding (the configs' default, conf/model/_base.yaml): normal(0, 1), nn.Embedding's own
          default, so a token enters the stream at the unit scale of what every sublayer reads and adds;
        - a tied embedding (the class default, and converted models that tie): normal(0, 1/sqrt(d_model)), the
          same rule read as the LM head's fan-in, so the initial logits have unit scale; biases zero;
        - the output projection of every residual sublayer (`is_residual_out`) divided by sqrt(n_sublayers)
          (GPT-2; mamba-ssm's rescale_prenorm_residual) so the stream's variance does not grow with depth. Mamba's
          dt/A/D/conv parameters keep their own init (blocks/mamba.py).
        Why not normal(0, 0.02) for every weight (GPT-2's choice at width 768): at the widths of these studies
        (d_model 16-256) it is 3-6x smaller than 1/sqrt(fan_in), attention scores start near zero, and a
        2-layer attention stack (d_model 64) stays on the induction-heads plateau: measured on the CPU (1 thread,
        batch 32, length 64, lr 3e-3), accuracy 0.06-0.09 after 1500 steps at 0.02, 0.13 at 0.1, PyTorch's
        default 0.10, this init 0.37 by step 600 (commit 8660fd9).
        Why not an embedding of 0.02 beside fan-in linears: the token's own identity is then 0.02 in a stream to
        which every sublayer adds O(1/sqrt(n_sublayers)), so a block that reads tokens after a context-mixing
        sublayer sees them drowned: MQAR with MFAF (d_model 64) stayed on the 1/8 plateau (0.15 at step 800) and
        learned by step 300 with 1/sqrt(d_model) (commit 7738680).
        Why untied at unit scale in the configs: with an MLP between two attention layers (AFAF, every transformer
        config) the tied 1/sqrt(d_model) embedding left the stack on MQAR's plateau (Zoology's task, length 64,
        8 pairs, CPU fp32, lr 3e-3): AFAF d_model 64 0.16 after 1500 steps; untied 1/sqrt(d_model) 0.14 and tied
        at unit scale 0.15 (either way of scaling) after 400-600; untied at unit scale 0.995 at step 400, and
        AFAFAFAF d_model 128 0.991 at step 200 (bench/results/issue19_cpu_notes.md). AA (no MLP) learned with the
        tied 1/sqrt(d_model) embedding (0.999 at step 400), and MAF (`demo`, which stays tied) learns faster tied:
        experiment=demo val acc 1.000 at step 200 tied, 0.140 at 200 and 0.953 at 400 untied. `init_std` set to a
        number brings the old scheme back (normal(0, init_std) for every linear and embedding weight). Converted
        checkpoints load their weights over whatever this draws."""
        if not isinstance(module, (nn.Linear, nn.Embedding)) or getattr(module.weight, "_no_generic_init", False):
            return
        weight = module.weight
        if self.init_std is not None:
            nn.init.normal_(weight, std=self.init_std)
        elif isinstance(module, nn.Embedding):  # unit scale untied; tied, also the head: 1/sqrt(d) (docstring)
            nn.init.normal_(weight, std=module.embedding_dim ** -0.5 if self.lm_head.weight is weight else 1.0)
        elif weight is self.embedding.weight:  # the tied LM head: already drawn as the embedding
            return
        else:
            nn.init.normal_(weight, std=module.in_features ** -0.5)
        if getattr(module, "is_residual_out", False):
            with torch.no_grad():
                weight /= math.sqrt(len(self.pattern))
        bias = getattr(module, "bias", None)
        if bias is not None and not getattr(bias, "_no_generic_init", False):
            nn.init.zeros_(bias)

    def forward(self, tokens: torch.Tensor, cache: InferenceCache | None = None,
                logits_to_keep: int | None = None) -> HybridOutput:
        """tokens [batch, L] -> HybridOutput. With a cache (allocate_inference_cache), tokens continue the sequence
        the cache holds (prefill on the parallel kernels; call again for the next chunk) and the cache advances.
        logits_to_keep: only the last k positions' logits ([batch, k, vocab]; a prefill needs 1)."""
        x = self.embedding(tokens)  # [batch, L, d_model]
        if self.residual_in_fp32:
            x = x.float()
        aux_loss = x.new_zeros((), dtype=torch.float32)
        counts = {}
        for i, layer in enumerate(self.layers):
            x, aux = layer(x) if cache is None else layer(x, cache=cache.layers[i])
            if aux:
                aux_loss = aux_loss + aux["moe_aux_loss"]
                counts[i] = aux["expert_counts"]
        if cache is not None:
            cache.seqlen += tokens.shape[1]
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]
        return HybridOutput(self.lm_head(self.norm(x.to(self.norm.weight.dtype))), aux_loss, counts)

    # ------------------------------------------------------------------ inference (hybrid/inference.py)
    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None) -> InferenceCache:
        """Zeroed caches for `batch_size` sequences of up to `max_seqlen` tokens: Mamba conv/SSM states (constant
        size), attention KV caches (max_seqlen long), None for F and E. dtype: of conv states and KV (default:
        the weights'); SSM states are fp32."""
        layers = [layer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device)
                  for layer in self.layers]
        return InferenceCache(layers, batch_size, max_seqlen)

    def step(self, tokens: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One token per sequence, tokens [batch] int64 -> logits [batch, vocab]; the cache advances in place."""
        x = self.embedding(tokens)  # [batch, d_model]
        if self.residual_in_fp32:
            x = x.float()
        for layer, layer_cache in zip(self.layers, cache.layers):
            x = layer.step(x, layer_cache)
        cache.seqlen += 1
        return self.lm_head(self.norm(x.to(self.norm.weight.dtype)))

    def generate(self, tokens, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | None = None, seed: int | None = None,
                 lengths=None, pad_token_id: int | None = None, cuda_graph: bool | None = None) -> torch.Tensor:
        """Prompts -> prompts + up to `max_new_tokens` sampled tokens, [batch, max_len + max_new_tokens].

        tokens: [batch, L] int64, or a list of prompts of different lengths (or a right-padded tensor with
        `lengths` [batch]). temperature 0 is greedy; top_k / top_p filter before sampling; seed makes sampling
        reproducible; a row stops at eos_token_id and is padded after it (pad_token_id, else eos, else 0); rows of
        shorter prompts are padded after their own max_new_tokens. cuda_graph: capture the step in a CUDA graph
        (default: on CUDA). See hybrid/inference.py."""
        from hybrid.inference import generate
        return generate(self, tokens, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed, lengths,
                        pad_token_id, cuda_graph)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token at `seq_len` (multiply-add = 2): every block plus the LM head."""
        return sum(layer.flops_per_token(seq_len) for layer in self.layers) + 2 * self.d_model * self.vocab_size
