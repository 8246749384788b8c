"""Causal attention behind one function: PyTorch SDPA, or flash-attn where installed and asked for.

`auto` uses SDPA (which itself picks flash / memory-efficient / cuDNN / math kernels for the device);
`flash_attn` must be asked for by name and is an error naming the package when it is missing.
"""
import importlib.util

import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flash_attn")
_used: set[str] = set()


def backends_used() -> list[str]:
    """The attention backends that have run since the last reset_backends_used() (for run records)."""
    return sorted(_used)


def reset_backends_used() -> None:
    """Forget the backends seen so far: a run calls this when it starts, so its record lists only its own."""
    _used.clear()


def attention(q, k, v, causal=True, backend="auto"):
    """Multi-head attention with grouped-query heads.

    Args:
        q: [batch, n_heads, L, head_dim]; k, v: [batch, n_kv_heads, L, head_dim], n_heads % n_kv_heads == 0.
    Returns:
        [batch, n_heads, L, head_dim] in q's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"n_heads={q.shape[1]} is not a multiple of n_kv_heads={k.shape[1]}")
    if backend == "flash_attn":
        if importlib.util.find_spec("flash_attn") is None:
            raise ImportError("attention backend 'flash_attn' needs the flash-attn package: "
                              "pip install 'hybrid[flash]' (or pip install flash-attn)")
        from flash_attn import flash_attn_func
        _used.add("flash_attn")
        # flash-attn wants [batch, L, heads, head_dim] and handles grouped heads itself
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        return out.transpose(1, 2)
    _used.add("sdpa")
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])
