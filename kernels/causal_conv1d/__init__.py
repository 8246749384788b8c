"""Causal depthwise conv1d (+ SiLU), the Mamba block's short convolution: one entry point, two backends."""
from hybrid.kernels.causal_conv1d.interface import BACKENDS, causal_conv1d

__all__ = ["BACKENDS", "causal_conv1d"]
