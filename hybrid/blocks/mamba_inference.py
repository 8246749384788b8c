"""The Mamba-1 mixer's recurrent inference path: its cache, the cached prefill and the one-token step.

Kept apart from the training forward (mamba.py) so that the two can change independently; both read the same
parameters. The state after t tokens is everything the mixer needs to continue, whatever t is:

    conv_state [batch, d_inner, d_conv]   the last d_conv inputs of the causal conv (zeros before the start)
    ssm_state  [batch, d_inner, N] fp32   h_t of the selective scan

Prefill runs the parallel kernels (the causal conv over [conv_state history | x], the scan with `initial_state`
and `return_last_state`), so a prompt of any length costs one parallel pass; a step costs O(1) in the sequence length.
"""
import importlib.util
import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hybrid.kernels.causal_conv1d import causal_conv1d
from hybrid.kernels.selective_scan import resolve_backend, selective_scan

log = logging.getLogger(__name__)


@dataclass
class MambaCache:
    """conv_state [batch, d_inner, d_conv] (the weights' dtype); ssm_state [batch, d_inner, N] fp32.
    empty: no token seen yet (both states zero), so a prefill may take the training forward's faster path."""
    conv_state: torch.Tensor
    ssm_state: torch.Tensor
    empty: bool = True


def allocate(mixer, batch_size: int, dtype=None, device=None) -> MambaCache:
    """Zero states for `batch_size` sequences, on the mixer's device and in its weights' dtype by default."""
    weight = mixer.in_proj.weight
    dtype, device = dtype or weight.dtype, device or weight.device
    return MambaCache(conv_state=torch.zeros(batch_size, mixer.d_inner, mixer.d_conv, dtype=dtype, device=device),
                      ssm_state=torch.zeros(batch_size, mixer.d_inner, mixer.d_state, dtype=torch.float32,
                                            device=device))


def ssm_inputs(mixer, u: torch.Tensor):
    """The scan's inputs from the conv's output u [batch, d_inner, L] (as the training forward makes them):
    delta [batch, d_inner, L] (before bias and softplus), B and C [batch, N, L] (selective) or [d_inner, N] (LTI),
    delta_bias [d_inner] fp32."""
    batch, _, L = u.shape
    if not mixer.selective:
        return u.new_zeros(batch, mixer.d_inner, L), mixer.B, mixer.C, mixer.dt_bias.float()
    dt, B, C = mixer.x_proj(u.transpose(1, 2)).split([mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    if mixer.dt_bc_norm:
        dt, B, C = mixer.dt_layernorm(dt), mixer.b_layernorm(B), mixer.c_layernorm(C)
    delta = (dt @ mixer.dt_proj.weight.T).transpose(1, 2)
    return delta, B.transpose(1, 2), C.transpose(1, 2), mixer.dt_proj.bias.float()


def _split_gate(mixer, xz: torch.Tensor):
    """in_proj's output split on its first feature axis into (u, z); z is None without the gate."""
    return xz.chunk(2, dim=1) if mixer.gate else (xz, None)


def fill_empty(cache: MambaCache, u: torch.Tensor, last_state: torch.Tensor) -> None:
    """An empty cache after the training forward ran over a whole prompt: u [batch, d_inner, L] the conv's inputs,
    last_state [batch, d_inner, N] the scan's final state."""
    d_conv, L = cache.conv_state.shape[-1], u.shape[-1]
    cache.conv_state.zero_()
    cache.conv_state[..., max(d_conv - L, 0):] = u[..., -d_conv:]
    cache.ssm_state.copy_(last_state)
    cache.empty = False


def prefill(mixer, x: torch.Tensor, cache: MambaCache) -> torch.Tensor:
    """x [batch, L, d_model] continuing the sequence `cache` holds -> [batch, L, d_model]; cache updated in place.
    (An empty cache takes the training forward instead, mamba.py, which needs no history and no copies.)"""
    u, z = _split_gate(mixer, mixer.in_proj(x).transpose(1, 2))  # each [batch, d_inner, L]
    history = torch.cat([cache.conv_state[..., 1:].to(u.dtype), u], dim=-1)  # [batch, d_inner, d_conv - 1 + L]
    cache.conv_state.copy_(history[..., -mixer.d_conv:])
    conv = mixer.conv1d  # the training forward's causal conv over history, its first d_conv - 1 outputs dropped
    u = causal_conv1d(history, conv.weight[:, 0], conv.bias, "silu",
                      backend=getattr(mixer, "conv_backend", "auto"))[..., mixer.d_conv - 1:]  # [batch, d_inner, L]
    delta, B, C, delta_bias = ssm_inputs(mixer, u)
    # in_proj and x_proj give feature-contiguous views; the scan reads steps-contiguous memory best (a transposed
    # view made its forward ~8x slower on an H200, issue 12): one copy each is far cheaper than those reads
    z = z.contiguous() if z is not None else None
    delta, B, C = (t.contiguous() if t.dim() == 3 else t for t in (delta, B, C))
    A = -torch.exp(mixer.A_log.float())
    backend = mixer.scan_backend
    if resolve_backend(backend, u.device) == "mamba_ssm":  # its kernel takes no initial state
        backend = "auto"
    y, last = selective_scan(u, delta, A, B, C, D=mixer.D.float(), z=z, delta_bias=delta_bias,
                             delta_softplus=True, return_last_state=True, initial_state=cache.ssm_state,
                             backend=backend)
    cache.ssm_state.copy_(last)
    cache.empty = False
    return mixer.out_proj(y.transpose(1, 2))


_FUSED_WORKS: dict[tuple, bool] = {}  # per kernel specialisation: did a probe of the fused step run?


def fused_works(mixer, x: torch.Tensor, cache: MambaCache) -> bool:
    """Whether the fused kernels run for this mixer's shapes, found once by a probe on copies of the states (so a
    Triton compile or launch error is logged and decoding takes the plain ops instead of failing)."""
    key = (x.device.type, x.dtype, cache.conv_state.dtype, mixer.d_state, mixer.d_conv, mixer.gate, mixer.selective)
    if key not in _FUSED_WORKS:
        probe = MambaCache(cache.conv_state.clone(), cache.ssm_state.clone())
        try:
            fused_step(mixer, x, probe)
            _FUSED_WORKS[key] = True
        except Exception as err:  # noqa: BLE001 - any compile or launch error: say so, use the plain ops
            log.warning("Mamba step: the fused Triton kernels failed for %s (%s); this shape decodes on plain ops",
                        key, str(err).splitlines()[0] if str(err) else type(err).__name__)
            _FUSED_WORKS[key] = False
    return _FUSED_WORKS[key]


def fused_available(device: torch.device) -> bool:
    """The Triton step kernels run here: on CUDA, or on the CPU under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def step(mixer, x: torch.Tensor, cache: MambaCache, backend: str = "auto") -> torch.Tensor:
    """One token x [batch, d_model] -> [batch, d_model]; the conv and SSM states advance in place.

    The recurrence in fp32: h = exp(dt A) h + dt B u ; y = C.h + D u ; y *= silu(z).
    backend: "torch" (plain ops), "triton" (the fused kernels of hybrid.kernels.mamba_step), "auto" (triton on
    CUDA)."""
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"unknown Mamba step backend {backend!r}; allowed: auto, torch, triton")
    cache.empty = False
    if backend == "triton":
        return fused_step(mixer, x, cache)
    if backend == "auto" and x.device.type == "cuda" and fused_available(x.device) and fused_works(mixer, x, cache):
        return fused_step(mixer, x, cache)
    u, z = _split_gate(mixer, mixer.in_proj(x))  # each [batch, d_inner]
    conv_state = cache.conv_state
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = u
    conv = mixer.conv1d
    u = (conv_state * conv.weight[:, 0, :]).sum(-1)
    if conv.bias is not None:
        u = u + conv.bias
    u = F.silu(u)  # [batch, d_inner]
    delta, B, C, delta_bias = ssm_inputs(mixer, u[..., None])
    A = -torch.exp(mixer.A_log.float())
    dt = F.softplus(delta[..., 0].float() + delta_bias)  # [batch, d_inner]
    if B.dim() == 3:  # selective: [batch, N, 1] -> [batch, 1, N]
        B, C = B.transpose(1, 2), C.transpose(1, 2)
    uf = u.float()
    h = cache.ssm_state
    h.mul_(torch.exp(dt[..., None] * A)).add_((dt * uf)[..., None] * B.float())
    y = (h * C.float()).sum(-1) + mixer.D.float() * uf  # [batch, d_inner]
    if z is not None:
        y = y * F.silu(z.float())
    return mixer.out_proj(y.to(x.dtype))


def fused_step(mixer, x: torch.Tensor, cache: MambaCache) -> torch.Tensor:
    """step() on the two Triton kernels (conv-state update, selective-state update) around the projections."""
    from hybrid.kernels.mamba_step import conv_state_update, selective_state_update
    u, z = _split_gate(mixer, mixer.in_proj(x))  # each [batch, d_inner]
    conv = mixer.conv1d
    u = conv_state_update(u, cache.conv_state, conv.weight[:, 0, :], conv.bias)  # silu(conv), [batch, d_inner]
    delta, B, C, delta_bias = ssm_inputs(mixer, u[..., None])
    if B.dim() == 3:  # selective: [batch, N, 1] -> [batch, 1, N]
        B, C = B.transpose(1, 2), C.transpose(1, 2)
    else:  # LTI: [d_inner, N] -> [1, d_inner, N]
        B, C = B[None], C[None]
    y = selective_state_update(cache.ssm_state, u, delta[..., 0], delta_bias, mixer.A_log, B, C, mixer.D, z)
    return mixer.out_proj(y)
