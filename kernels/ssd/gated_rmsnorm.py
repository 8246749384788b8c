"""The S block's gated RMSNorm fused in Triton, forward and backward, deterministic (hybrid.blocks.mamba2's
GatedRMSNorm is the definition; this computes the same in one pass each way, as mamba-ssm's layernorm_gated does).

Per row and group of `group_size` channels, in fp32:
    h = y * silu(z)  (h = y with norm_before_gate);  n = h / sqrt(mean(h^2) + eps);  out = n * weight
    (out = n * weight * silu(z) with norm_before_gate)
Forward: one program per (row, group). Backward: one program per (block of rows, group), looping over its rows; the
weight's gradient is written per program and summed by torch in a fixed order (no atomics). The number of row blocks
depends only on the number of rows, so a shape's result is bitwise repeatable.
"""
import math

import torch
import triton
import triton.language as tl

ROW_PROGRAMS = 512  # backward programs along the rows (each sums its rows' share of d weight)


@triton.jit
def _fwd_kernel(Y, Z, W, OUT, RSTD, D, GS, eps, BLOCK: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr):
    """OUT [M, D] (Y's dtype), RSTD [M, D / GS] fp32 for row `row`, group `g`; Y, Z [M, D] contiguous, W [D]."""
    row, g = tl.program_id(0), tl.program_id(1)
    col = tl.arange(0, BLOCK)
    inside = col < GS
    at = row.to(tl.int64) * D + g * GS + col
    y = tl.load(Y + at, mask=inside, other=0.0).to(tl.float32)
    z = tl.load(Z + at, mask=inside, other=0.0).to(tl.float32)
    gate = z * tl.sigmoid(z)
    h = y if NORM_BEFORE_GATE else y * gate
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, 0) / GS + eps)
    out = h * rstd * tl.load(W + g * GS + col, mask=inside, other=0.0).to(tl.float32)
    if NORM_BEFORE_GATE:
        out = out * gate
    tl.store(OUT + at, out.to(OUT.dtype.element_ty), mask=inside)
    tl.store(RSTD + row.to(tl.int64) * (D // GS) + g, rstd)


@triton.jit
def _bwd_kernel(Y, Z, W, RSTD, DOUT, DY, DZ, DW, M, D, GS, rows_per_program,
                BLOCK: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr):
    """DY, DZ [M, D] (Y's, Z's dtypes) for rows [pid * rows_per_program, ...) of group g, and DW[pid] [D] fp32 (this
    program's share of d weight, columns of group g)."""
    pid, g = tl.program_id(0), tl.program_id(1)
    col = tl.arange(0, BLOCK)
    inside = col < GS
    w = tl.load(W + g * GS + col, mask=inside, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    start = pid * rows_per_program
    for row in range(start, tl.minimum(start + rows_per_program, M)):
        at = tl.cast(row, tl.int64) * D + g * GS + col
        y = tl.load(Y + at, mask=inside, other=0.0).to(tl.float32)
        z = tl.load(Z + at, mask=inside, other=0.0).to(tl.float32)
        dout = tl.load(DOUT + at, mask=inside, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + tl.cast(row, tl.int64) * (D // GS) + g)
        sig = tl.sigmoid(z)
        gate = z * sig
        h = y if NORM_BEFORE_GATE else y * gate
        n = h * rstd
        if NORM_BEFORE_GATE:
            dw += dout * n * gate
            dgate = dout * n * w
            dn = dout * w * gate
        else:
            dw += dout * n
            dn = dout * w
        dh = rstd * (dn - n * (tl.sum(dn * n, 0) / GS))
        if NORM_BEFORE_GATE:
            dy = dh
        else:
            dy = dh * gate
            dgate = dh * y
        dz = dgate * sig * (1.0 + z * (1.0 - sig))  # d silu(z) / dz
        tl.store(DY + at, dy.to(DY.dtype.element_ty), mask=inside)
        tl.store(DZ + at, dz.to(DZ.dtype.element_ty), mask=inside)
    tl.store(DW + pid.to(tl.int64) * D + g * GS + col, dw, mask=inside)


class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z, weight, group_size, eps, norm_before_gate):
        shape = y.shape
        y2, z2 = y.reshape(-1, shape[-1]).contiguous(), z.reshape(-1, shape[-1]).contiguous()
        M, D = y2.shape
        out = torch.empty_like(y2)
        rstd = torch.empty(M, D // group_size, device=y.device, dtype=torch.float32)
        block = triton.next_power_of_2(group_size)
        warps = min(max(block // 256, 1), 8)
        _fwd_kernel[(M, D // group_size)](y2, z2, weight, out, rstd, D, group_size, eps, BLOCK=block,
                                          NORM_BEFORE_GATE=norm_before_gate, num_warps=warps)
        ctx.save_for_backward(y2, z2, weight, rstd)
        ctx.group_size, ctx.norm_before_gate, ctx.shape = group_size, norm_before_gate, shape
        return out.view(shape)

    @staticmethod
    def backward(ctx, dout):
        y2, z2, weight, rstd = ctx.saved_tensors
        M, D = y2.shape
        gs = ctx.group_size
        dout = dout.reshape(M, D).contiguous()
        dy, dz = torch.empty_like(y2), torch.empty_like(z2)
        rows_per_program = math.ceil(M / ROW_PROGRAMS)
        programs = math.ceil(M / rows_per_program)
        dw = torch.empty(programs, D, device=y2.device, dtype=torch.float32)
        block = triton.next_power_of_2(gs)
        _bwd_kernel[(programs, D // gs)](y2, z2, weight, rstd, dout, dy, dz, dw, M, D, gs, rows_per_program,
                                         BLOCK=block, NORM_BEFORE_GATE=ctx.norm_before_gate,
                                         num_warps=min(max(block // 256, 1), 8))
        return dy.view(ctx.shape), dz.view(ctx.shape), dw.sum(0).to(weight.dtype), None, None, None


def gated_rmsnorm_triton(y, z, weight, group_size: int, eps: float, norm_before_gate: bool):
    """y, z [..., D] (same dtype), weight [D], D a multiple of group_size -> [..., D] in y's dtype (see the module doc).
    CUDA tensors, or CPU ones under TRITON_INTERPRET=1."""
    if y.shape != z.shape or y.shape[-1] != weight.shape[0] or y.shape[-1] % group_size:
        raise ValueError(f"gated RMSNorm: y {tuple(y.shape)}, z {tuple(z.shape)} and weight {tuple(weight.shape)} "
                         f"must agree, with the last dim a multiple of group_size={group_size}")
    return _GatedRMSNorm.apply(y, z, weight, group_size, float(eps), bool(norm_before_gate))
