"""`A`: causal multi-head attention with rotary position embeddings and optional grouped-query heads."""
import torch
from torch import nn

from hybrid.kernels.attention import attention


def rotary(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate the two halves of each head by position-dependent angles (RoPE, the half-split form of GPT-NeoX).

    x: [batch, heads, L, head_dim] -> same shape.
    """
    L, d = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [d/2]
    angles = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # [L, d/2]
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)  # [L, d]
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """forward: x [batch, L, d_model] -> [batch, L, d_model]. rope_base=None turns RoPE off (Jamba uses none)."""

    def __init__(self, d_model: int, n_heads: int = 4, n_kv_heads: int | None = None,
                 rope_base: float | None = 10000.0, bias: bool = False, backend: str = "auto"):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        if rope_base is not None and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim; got d_model/n_heads={self.head_dim}")
        self.rope_base, self.backend = rope_base, backend
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.o_proj.is_residual_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, L, _ = x.shape
        # [batch, L, heads * head_dim] -> [batch, heads, L, head_dim]
        q = self.q_proj(x).view(batch, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope_base is not None:
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        out = attention(q, k, v, causal=True, backend=self.backend)  # [batch, heads, L, head_dim]
        return self.o_proj(out.transpose(1, 2).reshape(batch, L, -1))

    def flops_per_token(self, seq_len: int) -> int:
        """Projections plus QK^T and AV over the mean causal context (seq_len + 1) / 2."""
        proj = sum(m.in_features * m.out_features for m in (self.q_proj, self.k_proj, self.v_proj, self.o_proj))
        return 2 * proj + 2 * 2 * self.n_heads * self.head_dim * (seq_len + 1) // 2
