"""dt's elementwise preparation and the SSD's log decays, one Triton kernel each way (used by triton.py).

Forward, per (batch, chunk, block of heads), from dt [b, T, h] (any float dtype; Lp = T padded to the chunk size Q):
    dts = clamp(softplus(dt + dt_bias), lo, hi)   (each step optional; 0 past T: the padding neither decays nor
                                                   adds input)                               -> [b, Lp, h] fp32
    acs = the cumulative sum over each chunk of dts * A, summed in fp64 and handed over as two floats: acs (fp32)
          and acs_lo (what the rounding to fp32 dropped; see triton._seg)                     -> [b, h, Lp] each
Backward, from d dts [b, Lp, h] and d acs [b, h, Lp]: the reverse cumulative sum of d acs in fp64 (d acs is a row part
minus a column part that mostly cancel), then back through the clamp, softplus and bias to d dt [b, T, h]; d A and
d dt_bias as per-(batch, chunk) partials [b, c, h] that torch sums in a fixed order (no atomics: bitwise repeatable).
It replaces about ten PyTorch kernels each way (an fp64 scan over an outer dimension, a transposing copy, casts):
~1 ms of 13.5 at L 16K on an H200 (bench/results/ssd_cuda_h200_s7.json, the per-kernel rows).
"""
import math

import torch
import triton
import triton.language as tl

# above it softplus(x) = x, torch's default as mamba-ssm's; a tl.constexpr (a plain global float compiles in the
# interpreter only, not for a GPU)
SOFTPLUS_THRESHOLD = tl.constexpr(20.0)


@triton.jit
def _softplus(x):
    # log1p(exp(x)) without a log1p: log(w) * u / (w - 1) corrects the rounding of w = 1 + u
    u = tl.exp(tl.minimum(x, SOFTPLUS_THRESHOLD))
    w = 1.0 + u
    sp = tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))
    return tl.where(x > SOFTPLUS_THRESHOLD, x, sp)


@triton.jit
def _tile(T, Lp, H, Q: tl.constexpr, BH: tl.constexpr):
    """This program's batch b and chunk c, its steps t [Q] and heads h [BH], and masks: hm [BH] the heads that exist,
    inside [Q, BH] the steps of dt (t < T), tile [Q, BH] those of the padded outputs (t < Lp)."""
    b, c, hb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = c * Q + tl.arange(0, Q)
    h = hb * BH + tl.arange(0, BH)
    hm = h < H
    return b, c, t, h, hm, (t[:, None] < T) & hm[None, :], (t[:, None] < Lp) & hm[None, :]


@triton.jit
def _dt_biased(DT, BIAS, b, t, h, hm, inside, s_db, s_dl, s_dh, HAS_BIAS: tl.constexpr):
    """[Q, BH] dt (+ dt_bias) in fp32, 0 outside dt."""
    x = tl.load(DT + b * s_db + t[:, None] * s_dl + h[None, :] * s_dh, mask=inside, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(BIAS + h, mask=hm, other=0.0).to(tl.float32)[None, :]
    return x


@triton.jit
def _dt_decays_fwd_kernel(DT, BIAS, A, DTS, ACS, ACS_LO, T, Lp, H, lo, hi, s_db, s_dl, s_dh,
                          HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CLAMP: tl.constexpr,
                          Q: tl.constexpr, BH: tl.constexpr):
    b, _c, t, h, hm, inside, tile = _tile(T, Lp, H, Q, BH)
    x = _dt_biased(DT, BIAS, b, t, h, hm, inside, s_db, s_dl, s_dh, HAS_BIAS)
    if SOFTPLUS:
        x = _softplus(x)
    if CLAMP:
        x = tl.minimum(tl.maximum(x, lo), hi)
    x = tl.where(inside, x, 0.0)
    tl.store(DTS + (b * Lp + t[:, None]) * H + h[None, :], x, mask=tile)
    a = tl.load(A + h, mask=hm, other=0.0).to(tl.float64)
    acs = tl.cumsum(x.to(tl.float64) * a[None, :], axis=0)
    high = acs.to(tl.float32)
    at = (b * H + h[None, :]) * Lp + t[:, None]
    tl.store(ACS + at, high, mask=tile)
    tl.store(ACS_LO + at, (acs - high.to(tl.float64)).to(tl.float32), mask=tile)


@triton.jit
def _dt_decays_bwd_kernel(DT, BIAS, A, DTS, DDTS, DACS, DDT, DA_PART, DBIAS_PART, T, Lp, H, lo, hi, s_db, s_dl, s_dh,
                          HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CLAMP: tl.constexpr,
                          Q: tl.constexpr, BH: tl.constexpr):
    b, c, t, h, hm, inside, tile = _tile(T, Lp, H, Q, BH)
    g = tl.load(DACS + (b * H + h[None, :]) * Lp + t[:, None], mask=tile, other=0.0).to(tl.float64)
    # d (dts_t * A) = sum of d acs over the chunk's steps s >= t
    rev = tl.sum(g, axis=0)[None, :] - tl.cumsum(g, axis=0) + g
    dts = tl.load(DTS + (b * Lp + t[:, None]) * H + h[None, :], mask=tile, other=0.0)
    part = (b * tl.num_programs(1) + c) * H + h  # this program's [b, c, h] partial sums
    tl.store(DA_PART + part, tl.sum(rev * dts.to(tl.float64), axis=0), mask=hm)
    a = tl.load(A + h, mask=hm, other=0.0).to(tl.float64)
    gd = tl.load(DDTS + (b * Lp + t[:, None]) * H + h[None, :], mask=tile, other=0.0)
    gd += (rev * a[None, :]).to(tl.float32)
    # back through the clamp, softplus and bias, from dt recomputed
    x = _dt_biased(DT, BIAS, b, t, h, hm, inside, s_db, s_dl, s_dh, HAS_BIAS)
    if CLAMP:  # the gradient passes where lo <= the clamped value's input <= hi (torch's rule)
        v = _softplus(x) if SOFTPLUS else x
        gd = tl.where((v >= lo) & (v <= hi), gd, 0.0)
    if SOFTPLUS:
        gd = tl.where(x > SOFTPLUS_THRESHOLD, gd, gd * tl.sigmoid(x))
    gd = tl.where(inside, gd, 0.0)
    tl.store(DDT + (b * T + t[:, None]) * H + h[None, :], gd, mask=inside)
    if HAS_BIAS:
        tl.store(DBIAS_PART + part, tl.sum(gd.to(tl.float64), axis=0), mask=hm)


def _launch_shape(dt, Q, Lp):
    batch, _, heads = dt.shape
    BH = min(16, triton.next_power_of_2(heads))
    return (batch, Lp // Q, triton.cdiv(heads, BH)), BH


class DtDecays(torch.autograd.Function):
    """(dt [b, T, h], A [h], dt_bias [h] or None) -> dts [b, Lp, h] fp32, acs and acs_lo [b, h, Lp] fp32 (acs_lo
    has no gradient); Lp = T rounded up to the chunk size Q (a power of two)."""

    @staticmethod
    def forward(ctx, dt, A, dt_bias, softplus, dt_limit, Q, Lp):
        batch, T, heads = dt.shape
        lo, hi = dt_limit
        clamp = lo > 0 or hi < math.inf
        dts = torch.empty(batch, Lp, heads, device=dt.device, dtype=torch.float32)
        acs = torch.empty(batch, heads, Lp, device=dt.device, dtype=torch.float32)
        acs_lo = torch.empty_like(acs)
        grid, BH = _launch_shape(dt, Q, Lp)
        flags = dict(HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(softplus), CLAMP=clamp, Q=Q, BH=BH)
        bounds = (float(lo), float(hi) if hi < math.inf else 3.0e38)
        _dt_decays_fwd_kernel[grid](dt, dt_bias if dt_bias is not None else A, A, dts, acs, acs_lo, T, Lp, heads,
                                    *bounds, *dt.stride(), **flags)
        ctx.save_for_backward(dt, A, dt_bias, dts)
        ctx.flags, ctx.bounds, ctx.Lp = flags, bounds, Lp
        ctx.mark_non_differentiable(acs_lo)
        return dts, acs, acs_lo

    @staticmethod
    def backward(ctx, ddts, dacs, _):
        dt, A, dt_bias, dts = ctx.saved_tensors
        batch, T, heads = dt.shape
        Lp, Q = ctx.Lp, ctx.flags["Q"]
        ddts = torch.zeros_like(dts) if ddts is None else ddts.float().contiguous()
        dacs = torch.zeros(batch, heads, Lp, device=dt.device) if dacs is None else dacs.float().contiguous()
        ddt = torch.empty(batch, T, heads, device=dt.device, dtype=torch.float32)
        dA_part = torch.empty(batch, Lp // Q, heads, device=dt.device, dtype=torch.float64)
        dbias_part = torch.empty_like(dA_part) if dt_bias is not None else dA_part
        grid, _ = _launch_shape(dt, Q, Lp)
        _dt_decays_bwd_kernel[grid](dt, dt_bias if dt_bias is not None else A, A, dts, ddts, dacs, ddt, dA_part,
                                    dbias_part, T, Lp, heads, *ctx.bounds, *dt.stride(), **ctx.flags)
        dA = dA_part.sum((0, 1)).to(A.dtype)
        dbias = dbias_part.sum((0, 1)).to(dt_bias.dtype) if dt_bias is not None else None
        return ddt.to(dt.dtype), dA, dbias, None, None, None, None
