"""Causal attention behind one function: PyTorch SDPA, or flash-attn where installed and asked for.

`auto` uses SDPA (which itself picks flash / memory-efficient / cuDNN / math kernels for the device);
`flash_attn` must be asked for by name and is an error naming the package when it is missing.
"""
import importlib.util
import logging

import torch
import torch.nn.functional as F

from hybrid.kernels.backend_usage import BackendUsage

BACKENDS = ("auto", "sdpa", "flash_attn")
_usage = BackendUsage("attention", logging.getLogger(__name__))
backends_used = _usage.used  # the attention backends that ran since reset_backends_used() (run records)
reset_backends_used = _usage.reset  # a run calls this when it starts, so its record lists only its own


def attention(q, k, v, causal=True, backend="auto"):
    """Multi-head attention with grouped-query heads.

    Args:
        q: [batch, n_heads, Lq, head_dim]; k, v: [batch, n_kv_heads, Lk, head_dim], n_heads % n_kv_heads == 0.
            Lk > Lq (a chunk continuing a KV cache): causal aligns the queries to the last Lq keys, i.e. query i
            sees keys 0..Lk - Lq + i.
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
        _usage.ran("flash_attn")
        # flash-attn wants [batch, L, heads, head_dim] and handles grouped heads itself
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        return out.transpose(1, 2)
    _usage.ran("sdpa")
    if causal and k.shape[2] != q.shape[2]:
        # SDPA's is_causal aligns top-left; a chunk after a cached prefix needs bottom-right: PyTorch's CausalBias
        # runs that on the flash / memory-efficient kernels without a mask (on the CPU it builds one, Lq x Lk).
        # Its flash path takes no grouped heads, so K and V are repeated per query head here.
        from torch.nn.attention.bias import causal_lower_right
        if k.shape[1] != q.shape[1]:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]))
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])


def attention_decode(q, k_cache, v_cache, length):
    """One query per sequence against a preallocated KV cache, grouped-query heads kept grouped (K and V are
    never repeated per query head). Static shapes and no host sync, so a CUDA graph can capture it.

    Args:
        q: [batch, n_heads, head_dim]; k_cache, v_cache: [batch, n_kv_heads, max_seqlen, head_dim];
        length: int64 scalar tensor, the number of valid cache entries (the query's own key included).
    Returns:
        [batch, n_heads, head_dim] in q's dtype.
    """
    batch, n_heads, head_dim = q.shape
    n_kv, max_seqlen = k_cache.shape[1], k_cache.shape[2]
    if n_heads % n_kv:
        raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv}")
    _usage.ran("decode")
    qg = q.view(batch, n_kv, n_heads // n_kv, head_dim).to(k_cache.dtype)  # [batch, kv, group, head_dim]
    scores = (qg @ k_cache.transpose(-1, -2)).float() * head_dim ** -0.5  # [batch, kv, group, max_seqlen]
    valid = torch.arange(max_seqlen, device=q.device) < length
    probs = scores.masked_fill(~valid, float("-inf")).softmax(-1)  # softmax in fp32
    out = probs.to(v_cache.dtype) @ v_cache  # [batch, kv, group, head_dim]
    return out.reshape(batch, n_heads, head_dim).to(q.dtype)
