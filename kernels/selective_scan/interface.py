"""`selective_scan`: the one entry point of the Mamba-1 scan, checking shapes and dispatching to a backend.

Backends, all with mamba-ssm's signature and shapes:
  reference   PyTorch, chunked with a hand-written backward (fast on the CPU)     -> reference.py
  sequential  PyTorch, a loop over time through autograd (the definition)           -> reference.py
  triton      our fused Triton kernels, forward and backward                        -> triton.py
  mamba_ssm   mamba-ssm's CUDA kernel, where that package is installed              (optional)
`auto` takes triton on CUDA tensors where triton is installed (ours: deterministic gradients, any L, initial state;
checked on the H100 against float64 up to L = 1M, bench/results/scan_h100_notes.md) and reference everywhere else,
and logs its choice once. mamba_ssm runs only by name (it is faster at some shapes, see the notes, but its dB/dC
gradients use atomics). It never falls back silently: a backend asked for by name that cannot run is an error
naming what to install.
"""
import importlib.util
import logging
import os

import torch

from hybrid.kernels.backend_usage import BackendUsage

log = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "sequential", "triton", "mamba_ssm")
_usage = BackendUsage("selective_scan", log)
backends_used = _usage.used  # the scan backends that ran since reset_backends_used() (run records)
reset_backends_used = _usage.reset  # a run calls this when it starts, so its record lists only its own


def _triton_available(device: torch.device) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn `backend` (one of BACKENDS) into the backend that will run on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        cuda_kernel = device.type == "cuda" and importlib.util.find_spec("triton") is not None
        choice = "triton" if cuda_kernel else "reference"
        _usage.log_auto_choice(choice, device.type)
        return choice
    if backend == "mamba_ssm" and importlib.util.find_spec("mamba_ssm") is None:
        raise ImportError("selective_scan backend 'mamba_ssm' needs the mamba-ssm package: "
                          "pip install 'hybrid[mamba]' (or pip install mamba-ssm causal-conv1d)")
    if backend == "triton" and not _triton_available(device):
        if importlib.util.find_spec("triton") is None:
            raise ImportError("selective_scan backend 'triton' needs the triton package: pip install triton")
        raise RuntimeError(f"selective_scan backend 'triton' runs on CUDA tensors (or on the CPU with "
                           f"TRITON_INTERPRET=1); got tensors on {device}")
    if backend == "mamba_ssm" and device.type != "cuda":
        raise RuntimeError(f"selective_scan backend 'mamba_ssm' runs on CUDA tensors; got tensors on {device}")
    return backend


def check_shapes(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None):
    """Raise a ValueError naming the first tensor whose shape, dtype or device does not fit mamba-ssm's layout.

    u, delta, z: [batch, dim, L]; A: [dim, N]; B, C: [batch, N, L] or [dim, N]; D, delta_bias: [dim];
    initial_state: [batch, dim, N].
    """
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, dim, L]; got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be [dim={dim}, N]; got shape {tuple(A.shape)}")
    N = A.shape[1]
    expect = {"delta": (delta, (batch, dim, L)), "z": (z, (batch, dim, L)), "D": (D, (dim,)),
              "delta_bias": (delta_bias, (dim,)), "initial_state": (initial_state, (batch, dim, N))}
    for name, BC in (("B", B), ("C", C)):
        expect[name] = (BC, (batch, N, L) if BC.dim() == 3 else (dim, N))
    for name, (t, shape) in expect.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (u is {tuple(u.shape)}, A is {tuple(A.shape)}); "
                             f"got {tuple(t.shape)}")
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if t is None:
            continue
        if t.dtype not in floats:
            raise ValueError(f"{name} must be a floating tensor (fp16, bf16, fp32, fp64); got {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, backend="auto"):
    """The Mamba-1 selective scan (mamba-ssm's `selective_scan_fn` signature, plus `initial_state`).

    h_t = exp(delta_t * A) h_{t-1} + delta_t B_t u_t ;  y_t = C_t . h_t + D u_t ;  y_t *= silu(z_t)
    with delta_t = softplus(delta_t + delta_bias) when delta_softplus.

    Args:
        u, delta, z: [batch, dim, L]. A: [dim, N] (real; A = -exp(A_log) in the Mamba block).
        B, C: [batch, N, L] (selective) or [dim, N] (LTI: the same for every step).
        D, delta_bias: [dim]. initial_state: [batch, dim, N] (zeros when None).
        backend: one of BACKENDS.
    Returns:
        y [batch, dim, L] in u's dtype; with return_last_state, (y, last_state [batch, dim, N] fp32).
    """
    check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    name = resolve_backend(backend, u.device)
    _usage.ran(name)
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  return_last_state=return_last_state)
    if name == "sequential":
        from hybrid.kernels.selective_scan.reference import selective_scan_sequential
        return selective_scan_sequential(u, delta, A, B, C, initial_state=initial_state, **kwargs)
    if name == "reference":
        from hybrid.kernels.selective_scan.reference import selective_scan_chunked
        return selective_scan_chunked(u, delta, A, B, C, initial_state=initial_state, **kwargs)
    if name == "triton":
        from hybrid.kernels.selective_scan.triton import selective_scan_triton
        return selective_scan_triton(u, delta, A, B, C, initial_state=initial_state, **kwargs)
    # mamba_ssm: its kernel has no initial state and wants B/C of the LTI form as [dim, N] fp32
    if initial_state is not None:
        raise ValueError("backend 'mamba_ssm' takes no initial_state; use 'triton' or 'reference'")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    return selective_scan_fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                             delta_softplus=delta_softplus, return_last_state=return_last_state)
