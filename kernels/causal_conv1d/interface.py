"""`causal_conv1d`: shape checks and dispatch. Backends: `reference` (PyTorch, reference.py), `triton` (our fused
kernels, triton.py); `auto` takes triton on CUDA tensors where triton is installed and reference elsewhere.
A backend asked for by name that cannot run is an error naming why (never a silent fallback).
"""
import importlib.util
import os

import torch

BACKENDS = ("auto", "reference", "triton")
ACTIVATIONS = (None, "silu")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn `backend` (one of BACKENDS) into the backend that runs on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown causal_conv1d backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    has_triton = importlib.util.find_spec("triton") is not None
    if backend == "auto":
        return "triton" if device.type == "cuda" and has_triton else "reference"
    if backend == "triton":
        if not has_triton:
            raise ImportError("causal_conv1d backend 'triton' needs the triton package: pip install triton")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(f"causal_conv1d backend 'triton' runs on CUDA tensors (or on the CPU with "
                               f"TRITON_INTERPRET=1); got tensors on {device}")
    return backend


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = "silu", backend: str = "auto") -> torch.Tensor:
    """Causal depthwise conv1d, then SiLU (activation="silu") or nothing (None).

    Args:
        x: [batch, dim, L], any strides (the output and dx come back in x's memory layout).
        weight: [dim, K]. bias: [dim] or None.
    Returns:
        [batch, dim, L] in x's dtype.
    """
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be [batch, dim, L]; got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d: weight must be [dim={x.shape[1]}, K]; got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"causal_conv1d: bias must be [dim={x.shape[1]}]; got shape {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation={activation!r}; allowed: None, 'silu'")
    name = resolve_backend(backend, x.device)
    if name == "reference":
        from hybrid.kernels.causal_conv1d.reference import causal_conv1d_reference
        return causal_conv1d_reference(x, weight, bias, activation)
    from hybrid.kernels.causal_conv1d.triton import causal_conv1d_triton
    return causal_conv1d_triton(x, weight, bias, activation)
