"""The Mamba-1 selective scan: one public function, several backends (see interface.py)."""
from hybrid.kernels.selective_scan.interface import (
    BACKENDS,
    backends_used,
    reset_backends_used,
    resolve_backend,
    selective_scan,
)

__all__ = ["BACKENDS", "backends_used", "reset_backends_used", "resolve_backend", "selective_scan"]
