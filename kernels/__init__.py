"""Fused ops behind one dispatching function each: `selective_scan` (Mamba-1), `ssd` (Mamba-2), `attention`."""
from hybrid.kernels.attention import attention
from hybrid.kernels.selective_scan import selective_scan
from hybrid.kernels.ssd import ssd

__all__ = ["attention", "selective_scan", "ssd"]
