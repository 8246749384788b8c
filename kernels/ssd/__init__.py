"""Mamba-2's SSD (state-space dual): one public function, several backends (see interface.py)."""
from hybrid.kernels.ssd.interface import BACKENDS, backends_used, reset_backends_used, resolve_backend, ssd

__all__ = ["BACKENDS", "backends_used", "reset_backends_used", "resolve_backend", "ssd"]
