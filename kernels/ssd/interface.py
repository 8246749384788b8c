"""`ssd`: the one entry point of Mamba-2's state-space dual, checking its inputs and dispatching to a backend.

Backends, all with mamba-ssm's `mamba_chunk_scan_combined` shapes:
  reference   PyTorch, the chunked matrix form through autograd (fast on the CPU)     -> reference.py
  sequential  PyTorch, the recurrence as a loop over time (the definition)             -> reference.py
  triton      our Triton kernels, forward and backward, deterministic                 -> triton.py
  mamba_ssm   mamba-ssm's Triton SSD, where that package is installed                  (optional)
`auto` takes triton on CUDA (its tests passed compiled on an H200, bench/device/14_ssd.sh; at L 1K its fwd+bwd was
3.7x the reference's speed) and reference elsewhere, and logs its choice once. A backend asked for by name that
cannot run is an error naming what to install, never a silent fallback.
"""
import importlib.util
import logging
import math
import os

import torch

from hybrid.kernels.backend_usage import BackendUsage
from hybrid.kernels.ssd.reference import ssd_chunked, ssd_sequential

log = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "sequential", "triton", "mamba_ssm")
_usage = BackendUsage("ssd", log)
backends_used = _usage.used  # the SSD backends that ran since reset_backends_used() (run records)
reset_backends_used = _usage.reset  # a run calls this when it starts, so its record lists only its own


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn `backend` (one of BACKENDS) into the backend that will run on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown ssd backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        chosen = "triton" if device.type == "cuda" and importlib.util.find_spec("triton") is not None else "reference"
        _usage.log_auto_choice(chosen, device.type)
        return chosen
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            raise ImportError("ssd backend 'triton' needs the triton package: pip install triton")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(f"ssd backend 'triton' runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); "
                               f"got tensors on {device}")
    if backend == "mamba_ssm":
        if importlib.util.find_spec("mamba_ssm") is None:
            raise ImportError("ssd backend 'mamba_ssm' needs the mamba-ssm package: pip install 'hybrid[mamba]' "
                              "(or pip install mamba-ssm causal-conv1d)")
        if device.type != "cuda":
            raise RuntimeError(f"ssd backend 'mamba_ssm' runs on CUDA tensors; got tensors on {device}")
    return backend


def check_inputs(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_limit=(0.0, math.inf),
                 initial_states=None):
    """Raise a ValueError naming the first bad value: a shape, dtype or device that does not fit, heads not a
    multiple of groups, a chunk size that is not a power of two, dt limits out of order.

    x, z: [batch, L, heads, head_dim]; dt: [batch, L, heads]; A, dt_bias: [heads]; D: [heads] or
    [heads, head_dim]; B, C: [batch, L, groups, N]; initial_states: [batch, heads, head_dim, N].
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [batch, L, heads, head_dim]; got shape {tuple(x.shape)}")
    batch, L, heads, head_dim = x.shape
    if L < 1:
        raise ValueError(f"the sequence is empty: x has shape {tuple(x.shape)}; L must be at least 1")
    if B.dim() != 4:
        raise ValueError(f"B must be [batch, L, groups, N]; got shape {tuple(B.shape)}")
    groups, N = B.shape[2:]
    if groups < 1 or heads % groups:
        raise ValueError(f"heads={heads} is not a multiple of groups={groups} (B, C are [batch, L, groups, N]): "
                         f"each group of B and C serves heads / groups heads")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1 \
            or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be a power of two (1, 2, 4, ... 256)")
    expect = {"dt": (dt, [(batch, L, heads)]), "A": (A, [(heads,)]), "B": (B, [(batch, L, groups, N)]),
              "C": (C, [(batch, L, groups, N)]), "D": (D, [(heads,), (heads, head_dim)]),
              "z": (z, [tuple(x.shape)]), "dt_bias": (dt_bias, [(heads,)]),
              "initial_states": (initial_states, [(batch, heads, head_dim, N)])}
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for name, (t, shapes) in expect.items():
        if t is None:
            continue
        if tuple(t.shape) not in shapes:
            raise ValueError(f"{name} must have shape {' or '.join(map(str, shapes))} (x is {tuple(x.shape)}, "
                             f"B is {tuple(B.shape)}); got {tuple(t.shape)}")
        if t.dtype not in floats:
            raise ValueError(f"{name} must be a floating tensor (fp16, bf16, fp32, fp64); got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if len(dt_limit) != 2 or not 0 <= dt_limit[0] <= dt_limit[1]:
        raise ValueError(f"dt_limit={tuple(dt_limit)} must be (min, max) with 0 <= min <= max")


def ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
        initial_states=None, return_final_states=False, backend="auto"):
    """Mamba-2's SSD (mamba-ssm's `mamba_chunk_scan_combined` signature, less seq_idx / varlen).

    Per head, state h_t [head_dim, N]:
        dt_t = clamp(softplus(dt_t + dt_bias), *dt_limit)   (softplus with dt_softplus; clamp when limits are set)
        h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T ;  y_t = h_t C_t + D x_t ;  y_t *= silu(z_t)
    Args:
        x, z: [batch, L, heads, head_dim]. dt: [batch, L, heads]. A, dt_bias: [heads] (A < 0 for a decay).
        B, C: [batch, L, groups, N]; head i reads group i // (heads / groups). D: [heads] or [heads, head_dim].
        chunk_size: steps per chunk of the chunked form, a power of two. initial_states: [batch, heads, head_dim, N].
        backend: one of BACKENDS.
    Returns:
        y [batch, L, heads, head_dim] in x's dtype; with return_final_states, (y, final states
        [batch, heads, head_dim, N], fp32).
    """
    check_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_limit, initial_states)
    name = resolve_backend(backend, x.device)
    _usage.ran(name)
    kwargs = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=tuple(dt_limit),
                  initial_states=initial_states, return_final_states=return_final_states)
    if name == "sequential":
        return ssd_sequential(x, dt, A, B, C, **kwargs)
    if name == "reference":
        return ssd_chunked(x, dt, A, B, C, chunk_size, **kwargs)
    if name == "triton":
        from hybrid.kernels.ssd.triton import ssd_triton
        return ssd_triton(x, dt, A, B, C, chunk_size, **kwargs)
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, **kwargs)
