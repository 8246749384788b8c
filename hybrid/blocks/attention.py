"""`A`: causal multi-head attention with rotary position embeddings and optional grouped-query heads."""
from dataclasses import dataclass

import torch
from torch import nn

from hybrid.kernels.attention import attention, attention_decode


def rotary(x: torch.Tensor, base: float, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Rotate the two halves of each head by position-dependent angles (RoPE, the half-split form of GPT-NeoX).

    x: [batch, heads, L, head_dim] -> same shape, at positions start..start + L - 1 (start: an int, or an int64
    scalar tensor so that a captured decode step needs no host sync).
    """
    L, d = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [d/2]
    positions = torch.arange(L, device=x.device, dtype=torch.float32) + start
    angles = positions[:, None] * inv_freq  # [L, d/2]
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)  # [L, d]
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


@dataclass
class KVCache:
    """k, v [batch, n_kv_heads, max_seqlen, head_dim] (preallocated, zeros past `length`); length: int64 scalar
    tensor, the tokens written so far (a tensor so that a captured decode step advances it on the device)."""
    k: torch.Tensor
    v: torch.Tensor
    length: torch.Tensor


class Attention(nn.Module):
    """forward: x [batch, L, d_model] -> [batch, L, d_model]. rope_base=None turns RoPE off (Jamba uses none);
    rope_fraction < 1 rotates only the first rope_fraction * head_dim channels of each head (Bamba: 0.5).
    With a KVCache, forward continues the cached sequence (prefill) and step decodes one token."""

    def __init__(self, d_model: int, n_heads: int = 4, n_kv_heads: int | None = None,
                 rope_base: float | None = 10000.0, bias: bool = False, backend: str = "auto",
                 rope_fraction: float = 1.0):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.rope_dim = int(self.head_dim * rope_fraction)
        if not 0 < rope_fraction <= 1:
            raise ValueError(f"rope_fraction={rope_fraction} must lie in (0, 1]")
        if rope_base is not None and self.rope_dim % 2:
            raise ValueError(f"RoPE needs an even number of rotated channels; got head_dim={self.head_dim} * "
                             f"rope_fraction={rope_fraction} -> {self.rope_dim}")
        self.rope_base, self.backend, self.rope_fraction = rope_base, backend, rope_fraction
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.o_proj.is_residual_out = True

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None) -> KVCache:
        """A zeroed KV cache for `max_seqlen` tokens, grouped-query heads kept grouped (n_kv_heads, not n_heads)."""
        weight = self.k_proj.weight
        dtype, device = dtype or weight.dtype, device or weight.device
        shape = (batch_size, self.n_kv_heads, max_seqlen, self.head_dim)
        return KVCache(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device),
                       torch.zeros((), dtype=torch.int64, device=device))

    def _qkv(self, x: torch.Tensor, start: int | torch.Tensor = 0):
        """x [batch, L, d_model] -> q [batch, heads, L, head_dim], k and v [batch, kv_heads, L, head_dim], rotated
        to positions start.. ."""
        batch, L, _ = x.shape
        q = self.q_proj(x).view(batch, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope_base is not None:
            q, k = (torch.cat([rotary(t[..., :self.rope_dim], self.rope_base, start), t[..., self.rope_dim:]], -1)
                    if self.rope_dim < self.head_dim else rotary(t, self.rope_base, start) for t in (q, k))
        return q, k, v

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, L, _ = x.shape
        if cache is None:
            q, k, v = self._qkv(x)
        else:  # prefill: write this chunk's K/V after the cached ones and attend over both (one sync per chunk)
            start = int(cache.length)
            if start + L > cache.k.shape[2]:
                raise ValueError(f"KV cache holds max_seqlen={cache.k.shape[2]} tokens; {start} are cached and "
                                 f"{L} more do not fit (allocate the cache with a larger max_seqlen)")
            q, k, v = self._qkv(x, start)
            cache.k[:, :, start:start + L] = k
            cache.v[:, :, start:start + L] = v
            cache.length.fill_(start + L)
            k, v = cache.k[:, :, :start + L].to(q.dtype), cache.v[:, :, :start + L].to(q.dtype)  # autocast: q bf16
        out = attention(q, k, v, causal=True, backend=self.backend)  # [batch, heads, L, head_dim]
        return self.o_proj(out.transpose(1, 2).reshape(batch, L, -1))

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token x [batch, d_model] -> [batch, d_model] at position cache.length; writes its K/V there and
        advances the length, all on the device (the step can be captured in a CUDA graph). Past max_seqlen the
        write is out of range (an index error on the CPU): allocate enough."""
        q, k, v = self._qkv(x[:, None], cache.length)  # [batch, heads | kv_heads, 1, head_dim]
        index = cache.length.view(1)
        cache.k.index_copy_(2, index, k)
        cache.v.index_copy_(2, index, v)
        cache.length.add_(1)
        out = attention_decode(q[:, :, 0], cache.k, cache.v, cache.length)  # [batch, heads, head_dim]
        return self.o_proj(out.reshape(x.shape[0], -1))

    def flops_per_token(self, seq_len: int) -> int:
        """Projections plus QK^T and AV over the mean causal context (seq_len + 1) / 2."""
        proj = sum(m.in_features * m.out_features for m in (self.q_proj, self.k_proj, self.v_proj, self.o_proj))
        return 2 * proj + 2 * 2 * self.n_heads * self.head_dim * (seq_len + 1) // 2
