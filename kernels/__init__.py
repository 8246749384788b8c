"""Fused ops behind one dispatching function each: `selective_scan` (Mamba-1) and `attention`."""
from hybrid.kernels.attention import attention
from hybrid.kernels.selective_scan import selective_scan

__all__ = ["attention", "selective_scan"]
