"""`F`: the SwiGLU MLP, down(silu(gate(x)) * up(x)), as in LLaMA and Jamba."""
import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden(d_model: int, d_hidden: int | None, multiple_of: int = 16) -> int:
    """The hidden width: d_hidden when given, else 8/3 d_model (the same parameters as a 4x GELU MLP),
    rounded up to a multiple of `multiple_of`."""
    if d_hidden is not None:
        return int(d_hidden)
    h = int(8 * d_model / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """forward: x [batch, L, d_model] -> [batch, L, d_model]."""

    def __init__(self, d_model: int, d_hidden: int | None = None, bias: bool = False):
        super().__init__()
        hidden = swiglu_hidden(d_model, d_hidden)
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)
        self.down_proj.is_residual_out = True  # scaled at init (model.init_weights)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None) -> None:
        return None  # stateless: each token on its own

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def step(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """One token x [batch, d_model] -> [batch, d_model]."""
        return self(x)

    def flops_per_token(self, seq_len: int) -> int:
        return 2 * 3 * self.gate_proj.in_features * self.gate_proj.out_features
