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
        init_std: the std of the generic normal init (see init_weights).
        residual_in_fp32: keep the residual stream in fp32 whatever the weights' dtype (as mamba-ssm and
            Hugging Face's Mamba do); each block's norm still reads it in its weights' dtype. No effect in fp32.
    `init_args` holds the constructor's arguments as plain data: HybridLM(**model.init_args) rebuilds the
    same architecture (hybrid.convert saves it beside the weights).
    forward: tokens [batch, L] int64 -> HybridOutput.
    """

    def __init__(self, vocab_size: int, d_model: int, layout, blocks: Mapping | None = None,
                 layer_overrides: Mapping | None = None, tie_embeddings: bool = True, norm_eps: float = 1e-5,
                 init_std: float = 0.02, residual_in_fp32: bool = False):
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
        """The one init: normal(0, init_std) for linear and embedding weights, zero biases; the output
        projection of every residual sublayer scaled by 1/sqrt(n_sublayers) (GPT-2) so the residual stream's
        variance does not grow with depth. Mamba's dt/A/D parameters keep their own init (blocks/mamba.py)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if getattr(module.weight, "_no_generic_init", False):
                return
            std = self.init_std
            if getattr(module, "is_residual_out", False):
                std /= math.sqrt(len(self.pattern))
            nn.init.normal_(module.weight, std=std)
            bias = getattr(module, "bias", None)
            if bias is not None and not getattr(bias, "_no_generic_init", False):
                nn.init.zeros_(bias)

    def forward(self, tokens: torch.Tensor, cache: InferenceCache | None = None) -> HybridOutput:
        """tokens [batch, L] -> HybridOutput. With a cache (allocate_inference_cache), tokens continue the sequence
        the cache holds (prefill on the parallel kernels; call again for the next chunk) and the cache advances."""
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
