"""Blocks by symbol: each symbol of a layout pattern is one pre-norm residual sublayer (residual.py).

    M  Mamba-1 mixer        mamba.py        A  causal attention   attention.py
    F  SwiGLU MLP           mlp.py          E  mixture of experts moe.py
    S  Mamba-2 mixer        mamba2.py
"""
from torch import nn

from hybrid.blocks.attention import Attention
from hybrid.blocks.mamba import Mamba
from hybrid.blocks.mamba2 import Mamba2
from hybrid.blocks.mlp import SwiGLU
from hybrid.blocks.moe import MoE
from hybrid.blocks.residual import ResidualBlock

MIXERS: dict[str, type[nn.Module]] = {"M": Mamba, "A": Attention, "F": SwiGLU, "E": MoE, "S": Mamba2}
NAMES = {"M": "mamba", "A": "attention", "F": "mlp", "E": "moe", "S": "mamba2"}


def build_block(symbol: str, d_model: int, norm_eps: float = 1e-5, **kwargs) -> ResidualBlock:
    """The residual block for one layout symbol, its mixer built from `kwargs` (the block's config)."""
    if symbol not in MIXERS:
        raise ValueError(f"unknown block symbol {symbol!r}; allowed: {', '.join(MIXERS)}")
    return ResidualBlock(symbol, MIXERS[symbol](d_model, **kwargs), d_model, norm_eps)


__all__ = ["MIXERS", "NAMES", "ResidualBlock", "build_block"]
