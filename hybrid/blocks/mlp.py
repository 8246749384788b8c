"""`F`: the SwiGLU MLP, down(silu(gate(x)) * up(x)), as in LLaMA and Jamba; `activation="relu2"` is Nemotron-H's
ungated MLP, down(relu(up(x))^2), with no gate projection."""
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


ACTIVATIONS = ("swiglu", "relu2")


class SwiGLU(nn.Module):
    """forward: x [batch, L, d_model] -> [batch, L, d_model]."""

    def __init__(self, d_model: int, d_hidden: int | None = None, bias: bool = False, activation: str = "swiglu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown MLP activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        hidden = swiglu_hidden(d_model, d_hidden)
        if activation == "swiglu":
            self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)
        self.down_proj.is_residual_out = True  # scaled at init (model.init_weights)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None) -> None:
        return None  # stateless: each token on its own

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        if self.activation == "relu2":
            return self.down_proj(F.relu(self.up_proj(x)).square())
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def step(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """One token x [batch, d_model] -> [batch, d_model]."""
        return self(x)

    def flops_per_token(self, seq_len: int) -> int:
        return 2 * (3 if self.activation == "swiglu" else 2) * self.up_proj.in_features * self.up_proj.out_features
