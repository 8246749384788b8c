"""`S`: the Mamba-2 mixer (Dao & Gu, 2024), as mamba-ssm's `Mamba2` module, on `hybrid.kernels.ssd`.

    z, xBC, dt = in_proj(x)                 widths d_inner, d_inner + 2 * ngroups * d_state, nheads
    x, B, C = silu(causal depthwise conv1d(xBC))          hybrid.kernels.causal_conv1d (fused Triton kernel on CUDA)
                                            x [.., nheads, headdim], B and C [.., ngroups, d_state]
    y = ssd(x, dt, A = -exp(A_log), B, C, D, dt_bias, softplus, dt_limit)    a scalar A per head
    y = RMSNorm(y * silu(z))                per group of d_inner / ngroups channels (norm_before_gate: norm, then gate)
    out = out_proj(y)

d_inner = expand * d_model = nheads * headdim. Parameter names are mamba-ssm's (in_proj, conv1d, dt_bias, A_log, D,
norm.weight, out_proj), which are also Hugging Face's Mamba2Mixer's. `rmsnorm=False` gates y by silu(z) with no norm.

Inference (the block-level protocol): `allocate_inference_cache` gives a `Mamba2Cache` (the last d_conv inputs of
the conv, the SSD state [batch, nheads, headdim, d_state] in fp32); `forward(x, cache)` continues the sequence the
cache has seen and updates it in place; `step(x, cache)` does one token through the recurrence.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hybrid.kernels.backend_usage import BackendUsage
from hybrid.kernels.causal_conv1d import causal_conv1d
from hybrid.kernels.causal_conv1d.interface import BACKENDS as CONV_BACKENDS
from hybrid.kernels.causal_conv1d.reference import causal_conv1d_reference
from hybrid.kernels.ssd import ssd
from hybrid.kernels.ssd.reference import process_dt


@dataclass
class Mamba2Cache:
    """conv_state [batch, conv_dim, d_conv]: the last d_conv inputs of the conv (zeros before the sequence);
    ssm_state [batch, nheads, headdim, d_state] fp32: the SSD state after the last token."""
    conv_state: torch.Tensor
    ssm_state: torch.Tensor


# the gated RMSNorm's: auto (the fused Triton kernel on CUDA tensors, PyTorch elsewhere), torch, or triton (also in
# Triton's interpreter under TRITON_INTERPRET=1, for the CPU tests)
NORM_BACKENDS = ("auto", "torch", "triton")
norm_usage = BackendUsage("gated_rmsnorm", logging.getLogger(__name__))  # run records list what ran


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) over groups of `group_size` channels (or RMSNorm(y) * silu(z) with norm_before_gate),
    in fp32 (fp64 for fp64 inputs), times a learned weight. forward: y, z [..., dim] -> [..., dim] in y's dtype.
    backend "torch" (this code, autograd), "triton" (one fused Triton pass each way on CUDA tensors, or in Triton's
    interpreter under TRITON_INTERPRET=1, of one 16-bit or fp32 dtype: kernels/ssd/gated_rmsnorm.py; else this code)
    or "auto" (the default: "triton" on CUDA tensors, this code elsewhere). On an H200 the fused norm halves the S
    block's peak memory (d_model 1024, batch 8, L 2048, bf16: 736 vs 1504 MiB, ssd_stages_block_h200_s9.json); its
    speed is within the bench's order effect (5.83 vs 5.19 ms there, 5.37 vs 5.95 in session 7, the block timed first
    the slower both times). Within 2e-5 of this code in bf16 (ssd_checks_h200_s8.txt, _s9.txt)."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5, norm_before_gate: bool = False,
                 backend: str = "auto"):
        super().__init__()
        if backend not in NORM_BACKENDS:
            raise ValueError(f"norm_backend={backend!r}; allowed: {', '.join(NORM_BACKENDS)}")
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size, self.eps, self.norm_before_gate, self.backend = group_size, eps, norm_before_gate, backend

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        on_triton = y.is_cuda or (self.backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1")
        if self.backend != "torch" and on_triton and y.dtype == z.dtype and y.dtype != torch.float64:
            from hybrid.kernels.ssd.gated_rmsnorm import gated_rmsnorm_triton
            norm_usage.ran("triton")
            return gated_rmsnorm_triton(y, z, self.weight, self.group_size, self.eps, self.norm_before_gate)
        norm_usage.ran("torch")
        acc = torch.float64 if y.dtype == torch.float64 else torch.float32
        h = y.to(acc)
        gate = F.silu(z.to(acc))
        if not self.norm_before_gate:
            h = h * gate
        groups = h.unflatten(-1, (-1, self.group_size))
        h = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        if self.norm_before_gate:
            h = h * gate
        return (h * self.weight.to(acc)).to(y.dtype)


class Mamba2(nn.Module):
    """forward: x [batch, L, d_model] (, cache) -> [batch, L, d_model]; step: x [batch, d_model], cache -> same."""

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, A_init_range=(1.0, 16.0), D_has_hdim: bool = False, rmsnorm: bool = True,
                 norm_before_gate: bool = False, rmsnorm_eps: float = 1e-5, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_limit=(0.0, math.inf), bias: bool = False, conv_bias: bool = True,
                 chunk_size: int = 256, ssd_backend: str = "auto", conv_backend: str = "auto",
                 norm_backend: str = "auto"):
        super().__init__()
        d_inner = expand * d_model
        if headdim < 1 or d_inner % headdim:
            raise ValueError(f"headdim={headdim} does not divide d_inner = expand * d_model = {d_inner}; "
                             f"the heads split d_inner into nheads = d_inner / headdim")
        nheads = d_inner // headdim
        if ngroups < 1 or nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} does not divide nheads = d_inner / headdim = {nheads}; each group "
                             f"of B and C serves nheads / ngroups heads")
        if chunk_size < 1 or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size={chunk_size} must be a power of two")
        if conv_backend not in CONV_BACKENDS:
            raise ValueError(f"conv_backend={conv_backend!r}; allowed: {', '.join(CONV_BACKENDS)}")
        self.d_model, self.d_inner, self.d_state, self.d_conv = d_model, d_inner, d_state, d_conv
        self.headdim, self.nheads, self.ngroups, self.chunk_size = headdim, nheads, ngroups, chunk_size
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        self.D_has_hdim, self.rmsnorm, self.ssd_backend = D_has_hdim, rmsnorm, ssd_backend
        self.conv_backend = conv_backend  # hybrid.kernels.causal_conv1d: auto | reference | triton
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + nheads, bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1,
                                bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(nheads))
        self.A_log = nn.Parameter(torch.empty(nheads))
        self.D = nn.Parameter(torch.empty(d_inner if D_has_hdim else nheads))
        if rmsnorm:
            self.norm = GatedRMSNorm(d_inner, d_inner // ngroups, rmsnorm_eps, norm_before_gate, norm_backend)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.out_proj.is_residual_out = True
        self.A_init_range, self.dt_min, self.dt_max, self.dt_init_floor = A_init_range, dt_min, dt_max, dt_init_floor
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """Mamba-2's own init (the model's generic init only touches Linear and Embedding weights):
        A ~ U[A_init_range] per head, D = 1, dt bias such that softplus(bias) ~ LogUniform[dt_min, dt_max]."""
        if self.A_log.is_meta:
            return
        lo, hi = self.A_init_range
        self.A_log.copy_(torch.empty(self.nheads).uniform_(lo, hi).log())
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(self.dt_max) - math.log(self.dt_min))
                       + math.log(self.dt_min)).clamp(min=self.dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) == dt

    def _conv(self, xBC: torch.Tensor) -> torch.Tensor:
        """silu(causal conv1d(xBC)): [batch, conv_dim, L] (a transposed view) -> [batch, L, conv_dim]."""
        weight, bias = self.conv1d.weight[:, 0], self.conv1d.bias
        if self.conv_backend == "reference" or (self.conv_backend == "auto" and xBC.device.type != "cuda"):
            # auto's choice off CUDA, made here: the interface's dispatch looks triton up on every call (38 us on the
            # CPU). F.conv1d's output is [batch, conv_dim, L + d_conv - 1] sliced: SiLU and its backward on that
            # strided view take PyTorch's slow path (5x on the CPU), so they run on a contiguous copy
            out = causal_conv1d_reference(xBC, weight, bias, None)
            return F.silu(out.transpose(1, 2).contiguous())
        return causal_conv1d(xBC, weight, bias, "silu", backend=self.conv_backend).transpose(1, 2)

    def _split(self, zxbcdt: torch.Tensor):
        """[..., d_in_proj] -> z [..., d_inner], xBC [..., conv_dim], dt [..., nheads]."""
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _D(self) -> torch.Tensor:
        return self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D

    def _out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y [..., d_inner] (D already added) -> out_proj(norm(y, z)) [..., d_model]; without rmsnorm z gated y."""
        return self.out_proj(self.norm(y, z) if self.rmsnorm else y)

    def forward(self, x: torch.Tensor, cache: Mamba2Cache | None = None) -> torch.Tensor:
        z, xBC, dt = self._split(self.in_proj(x))
        xBC = xBC.transpose(1, 2)  # [batch, conv_dim, L], a view
        if cache is None:
            xBC = self._conv(xBC)
        else:  # the cache's last d_conv - 1 inputs stand in for the left padding
            window = torch.cat([cache.conv_state[..., 1:].to(xBC.dtype), xBC], dim=-1)
            cache.conv_state.copy_(window[..., -self.d_conv:])
            xBC = F.silu(F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)).transpose(1, 2)
        xs, B, C = xBC.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        out = ssd(xs.unflatten(-1, (self.nheads, self.headdim)), dt, -torch.exp(self.A_log.float()),
                  B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state)),
                  self.chunk_size, D=self._D(), z=None if self.rmsnorm else z.unflatten(-1, (self.nheads, -1)),
                  dt_bias=self.dt_bias, dt_softplus=True, dt_limit=self.dt_limit,
                  initial_states=None if cache is None else cache.ssm_state,
                  return_final_states=cache is not None, backend=self.ssd_backend)
        if cache is not None:
            out, state = out
            cache.ssm_state.copy_(state)
        return self._out(out.flatten(-2), z)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None) -> Mamba2Cache:
        """Zeroed states for `batch_size` sequences (max_seqlen is not needed: the state has a fixed size)."""
        device = device or self.in_proj.weight.device
        return Mamba2Cache(
            conv_state=torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device,
                                   dtype=dtype or self.conv1d.weight.dtype),
            ssm_state=torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device,
                                  dtype=torch.float32))

    def step(self, x: torch.Tensor, cache: Mamba2Cache) -> torch.Tensor:
        """One token through the recurrence: x [batch, d_model] -> [batch, d_model]; the cache is updated."""
        z, xBC, dt = self._split(self.in_proj(x))
        window = torch.cat([cache.conv_state[..., 1:], xBC[..., None].to(cache.conv_state.dtype)], dim=-1)
        cache.conv_state.copy_(window)
        xBC = (window * self.conv1d.weight[:, 0]).sum(-1)  # [batch, conv_dim]
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias
        xs, B, C = F.silu(xBC).split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], -1)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        dt = process_dt(dt, self.dt_bias, True, self.dt_limit, acc)  # [batch, nheads]
        xh = xs.to(acc).unflatten(-1, (self.nheads, self.headdim))  # [batch, nheads, headdim]
        per_head = self.nheads // self.ngroups
        B = B.to(acc).unflatten(-1, (self.ngroups, self.d_state)).repeat_interleave(per_head, dim=1)
        C = C.to(acc).unflatten(-1, (self.ngroups, self.d_state)).repeat_interleave(per_head, dim=1)
        decay = torch.exp(dt * -torch.exp(self.A_log.to(acc)))  # [batch, nheads]
        state = cache.ssm_state.to(acc) * decay[..., None, None] + (dt[..., None] * xh)[..., None] * B[:, :, None]
        cache.ssm_state.copy_(state)
        y = (state * C[:, :, None]).sum(-1)  # [batch, nheads, headdim]
        D = self._D().to(acc)
        y = y + xh * (D[:, None] if D.dim() == 1 else D)
        if not self.rmsnorm:
            y = y * F.silu(z.to(acc).unflatten(-1, (self.nheads, self.headdim)))
        return self._out(y.flatten(-2).to(x.dtype), z)

    def flops_per_token(self, seq_len: int) -> int:
        """Projections, the conv, and the chunked SSD: per token, C.B and the masked mix over a chunk
        (2 Q (ngroups N + d_inner)), its state contribution and the entering state's readout (4 d_inner N)."""
        proj = self.in_proj.in_features * self.in_proj.out_features
        proj += self.out_proj.in_features * self.out_proj.out_features
        Q = min(self.chunk_size, seq_len)
        ssd_flops = 2 * Q * (self.ngroups * self.d_state + self.d_inner) + 4 * self.d_inner * self.d_state
        return 2 * proj + 2 * self.conv_dim * self.d_conv + ssd_flops
