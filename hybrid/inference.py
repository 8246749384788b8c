"""Autoregressive generation over HybridLM's recurrent inference path.

    cache = model.allocate_inference_cache(batch, max_seqlen)     one cache per layer (None for F and E)
    logits = model(prompt, cache).logits                            prefill on the parallel kernels
    logits = model.step(token, cache)                               one token per sequence, O(1) for Mamba

`generate` drives that loop. Prompts of different lengths in one batch: pass `lengths` (the prompts right-padded
into `tokens`) or a list of prompts. The batch prefills the tokens every prompt has (the shortest prompt's
length), then steps; while a row is still inside its own prompt, its next token is the prompt's token instead of
a sampled one ("teacher forcing"). Every row thus sees exactly its own prompt from position 0, without padding
inside a state, a mask or a per-row position, so its tokens are those it would get alone.
Sampling draws with the exponential-race trick (argmax of p / Exp(1)): no host sync per token.
"""
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass
class InferenceCache:
    """The per-layer caches of a HybridLM (None for stateless layers), for `batch_size` sequences of up to
    `max_seqlen` tokens (a bound only attention layers need); `seqlen` counts the tokens seen so far."""
    layers: list = field(default_factory=list)
    batch_size: int = 1
    max_seqlen: int = 0
    seqlen: int = 0

    def reset(self) -> None:
        """Back to the empty sequence, reusing the buffers."""
        for c in self.layers:
            for t in vars(c).values() if c is not None else ():
                if isinstance(t, torch.Tensor):
                    t.zero_()
            if hasattr(c, "empty"):
                c.empty = True
        self.seqlen = 0

    def nbytes(self) -> int:
        """Bytes held by the caches' tensors."""
        return sum(t.numel() * t.element_size() for c in self.layers if c is not None
                   for t in vars(c).values() if isinstance(t, torch.Tensor))


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens from logits [batch, vocab] -> [batch] int64. temperature 0: argmax (top_k/top_p ignored)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(int(top_k), logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # the tokens after the nucleus; the first is always kept
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    race = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / race).argmax(-1)


def check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    """A ValueError naming the bad sampling argument."""
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; must be >= 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}; must be >= 0 (0 is greedy)")
    if top_k is not None and int(top_k) < 1:
        raise ValueError(f"top_k={top_k}; must be >= 1 or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}; must be in (0, 1] or None")


def pad_prompts(tokens, lengths=None, pad: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as (tokens [batch, max_len] right-padded with `pad`, lengths [batch] int64).

    tokens: a [batch, L] tensor (with `lengths`, row i's prompt is tokens[i, :lengths[i]]; without, all L), or
    a list of 1-D sequences of token ids."""
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, L] (or a list of prompts); got shape {tuple(tokens.shape)}")
        batch, L = tokens.shape
        lengths = torch.full((batch,), L) if lengths is None else torch.as_tensor(lengths).long().cpu()
        padded = tokens.to(device)
    else:
        if lengths is not None:
            raise ValueError("lengths goes with a padded [batch, L] tensor; a list of prompts has its own lengths")
        rows = [torch.as_tensor(p, dtype=torch.long).flatten() for p in tokens]
        lengths = torch.tensor([len(r) for r in rows])
        padded = torch.full((len(rows), int(lengths.max()) if rows else 0), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            padded[i, :len(r)] = r
        padded = padded.to(device)
    if padded.shape[0] == 0 or lengths.shape != (padded.shape[0],):
        raise ValueError(f"lengths must have one entry per prompt ({padded.shape[0]}); got {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > padded.shape[1]:
        raise ValueError(f"prompt lengths must be in 1..{padded.shape[1]}; got {lengths.tolist()}")
    return padded, lengths


def graph_for(model, batch: int, total: int, strict: bool):
    """(cache, captured step) for `batch` sequences of `total` tokens, reused across generate calls of the same
    shape as mamba-ssm's generate(cg=True) does (held on the model as `_decoding`; the cache is reset, in place).
    (None, model.step) when capture fails and not `strict`."""
    key = (batch, total, next(model.parameters()).dtype)
    held = getattr(model, "_decoding", None)
    if held is not None and held[0] == key:
        held[1].reset()
        return held[1], held[2]
    model._decoding = None  # free the previous shape's cache before allocating this one
    from hybrid.cuda_graph import GraphStep
    cache = model.allocate_inference_cache(batch, total)
    try:
        step = GraphStep(model, cache)
    except RuntimeError as err:
        if strict:
            raise
        log.warning("decoding without a CUDA graph: capturing the step failed (%s)", str(err).splitlines()[0])
        return None, model.step
    model._decoding = (key, cache, step)
    return cache, step


@torch.no_grad()
def generate(model, tokens: torch.Tensor | Sequence, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
             seed: int | None = None, lengths=None, pad_token_id: int | None = None,
             cuda_graph: bool | None = None) -> torch.Tensor:
    """Sample `max_new_tokens` after each prompt. See HybridLM.generate for the arguments.

    Returns tokens [batch, max_len + max_new_tokens]: row i is its prompt, its new tokens, then padding
    (pad_token_id, else eos_token_id, else 0) from position lengths[i] + max_new_tokens, or after its first
    generated eos."""
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    device = next(model.parameters()).device
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    prompts, lengths = pad_prompts(tokens, lengths, pad, device)
    batch, max_len = prompts.shape
    total = max_len + int(max_new_tokens)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    cache, step = None, model.step
    if cuda_graph or (cuda_graph is None and device.type == "cuda"):
        cache, step = graph_for(model, batch, total, strict=bool(cuda_graph))
    if cache is None:
        cache = model.allocate_inference_cache(batch, total)

    out = torch.full((batch, total), pad, dtype=torch.long, device=device)
    out[:, :max_len] = prompts
    lengths = lengths.to(device)
    in_prompt = torch.arange(total, device=device)[None] < lengths[:, None]  # [batch, total]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    start = int(lengths.min())
    logits = model(prompts[:, :start], cache, logits_to_keep=1).logits[:, -1]  # [batch, vocab]
    for t in range(start, total):
        token = sample(logits, temperature, top_k, top_p, generator)
        token = torch.where(in_prompt[:, t], out[:, t], token)
        if eos_token_id is not None:  # a finished row keeps decoding eos (a valid id) but stores padding
            token = torch.where(done, torch.full_like(token, eos_token_id), token)
            out[:, t] = torch.where(done, torch.full_like(token, pad), token)
            done |= ~in_prompt[:, t] & (token == eos_token_id)
        else:
            out[:, t] = token
        if t == total - 1:
            break
        if eos_token_id is not None and (t - start) % 16 == 15 and bool(done.all()):  # a sync every 16 tokens
            break
        logits = step(token, cache)
    past_end = torch.arange(total, device=device)[None] >= (lengths + int(max_new_tokens))[:, None]
    return out.masked_fill(past_end, pad)
