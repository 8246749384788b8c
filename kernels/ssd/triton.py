"""Our Triton SSD (Mamba-2), forward and backward, deterministic. Design notes: README.md beside this.

The core computed here, per (batch, head), with `acs` the cumulative sum of dt * A from each chunk's start:
    y_i = sum_{j <= i in i's chunk} (C_i . B_j) exp(acs_i - acs_j) dt_j x_j  +  exp(acs_i) H_c C_i
    S_c = sum_{j in chunk c} exp(acs_last - acs_j) dt_j x_j B_j^T            (what chunk c adds to the state)
    H_{c+1} = exp(acs_last of c) H_c + S_c,  H_0 = the initial state,  the final state H_{n_chunks}
Forward: chunk states (the same kernel gives the backward's sum_i exp(acs_i) dy_i C_i^T), state passing (the only
loop over chunks; its reverse in the backward), C_i . B_j once per group, and the chunk output with D x, written in
x's dtype. The backward's four chunk kernels are in triton_bwd.py (dCB per group; dC and dB per group, looping over
the group's heads; dx per head). dt's bias/softplus/clamp and the cumulative sum of dt * A are one kernel each way
(dt_decays.py); the z gate stays in PyTorch, differentiated by autograd. Sums over a group's heads run inside one
program; sums over block pairs and state rows are written per program and reduced by torch in a fixed order: no
atomics, bitwise repeatable.
"""
import math
import os

import torch
import triton
import triton.language as tl

from hybrid.kernels.ssd.dt_decays import DtDecays
from hybrid.kernels.ssd.reference import _finish

BLOCK = 64  # positions per row/column block inside a chunk (at least 16, for tl.dot)
BPS = 16  # state rows per program of the state passing (P = 64: 4 programs per (batch, head))
# head_dim and N tiles: at least 64 wide. A 32-wide bf16 tile is a 64-byte row, which Triton lays out for Hopper's
# wgmma with a 64-byte swizzle; at head_dim 32 (mamba2_small, nemotron_h_small) those kernels crashed an H200 with an
# illegal memory access (Triton 3.6) although every global load and store is inside its tensor (the interpreter's
# bounds check, tests/kernels/test_triton_ssd.py): the suspected cause (README.md). 64-wide tiles get the 128-byte
# layout of the shapes that ran.
FEATURE_TILE = 64
# num_warps and num_stages per kernel, timed on an H200 (Triton 3.6) at the bench's shape (bf16, L 16384, 32 heads x
# 64, N 128, chunk 256; bench/results/ssd_tune_probe_h200_s7.json). Fixed rather than autotuned: a choice made by
# timing at run time could differ between two runs, and the results with it (num_warps changes reduction orders).
# One pipeline stage for the two kernels that loop over a chunk's blocks building a [BI, BI] decay in registers
# (_chunk_out_fwd 3.29 -> 1.87 ms, _dx 3.51 -> 2.24 ms: deeper pipelines only add shared memory and cost occupancy);
# 4 warps for the backward's per-group kernels (_dcb 2.90 -> 2.26, _dc 0.78 -> 0.60, _db 0.64 -> 0.51 ms from 8
# warps, though Triton 3.9 spills 8-64 bytes there). The rest are at Triton's defaults (4 warps, 3 stages), which timed
# within 2.5 % of the best.
LAUNCH = {
    "chunk_outer": dict(num_warps=4, num_stages=3),
    "state_pass_fwd": dict(num_warps=4, num_stages=3),
    "cb": dict(num_warps=4, num_stages=3),
    "chunk_out_fwd": dict(num_warps=4, num_stages=1),
    "state_pass_bwd": dict(num_warps=4, num_stages=3),
    "dcb": dict(num_warps=4, num_stages=3),
    "dc": dict(num_warps=4, num_stages=3),
    "db": dict(num_warps=4, num_stages=3),
    "dx": dict(num_warps=4, num_stages=1),
}


def _pow2(n: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(n))


@triton.jit
def _dot(a, b, LOWP: tl.constexpr):
    # LOWP 0 (fp32 inputs): an exact fp32 product (no TF32); 1 (16-bit inputs): bf16 operands on the tensor cores
    # with fp32 accumulation, as mamba-ssm multiplies in its inputs' dtype; 2: the same in fp16 (the interpreter's
    # bf16 dot returns garbage in Triton 3.9, so the CPU tests exercise the 16-bit path through fp16)
    if LOWP == 1:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif LOWP == 2:
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:  # operands may come in as loaded (a 16-bit B or C beside an fp32 x): fp32 both
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def _seg(acs_i, lo_i, acs_j, lo_j):
    """[BI, BJ] acs_i - acs_j from the two-float log decays (acs + lo, ACS_LO holding what fp32 acs rounded off):
    the high parts of nearby steps subtract exactly, so the segment keeps fp32 precision relative to itself, not to
    |acs| (which grows over a chunk: dt |A| = 30 per step makes it ~8000 at step 256, and 8000 * 6e-8 = 5e-4 of error
    in every exponent)."""
    return (acs_i[:, None] - acs_j[None, :]) + (lo_i[:, None] - lo_j[None, :])


@triton.jit
def _chunk_outer_kernel(U, V, DT, ACS, ACS_LO, OUT, L, H, HG, P, N, Q,
                        su_b, su_l, su_h, sv_b, sv_l, sv_g, sdt_b, sdt_l,
                        STATE: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr):
    """OUT[b, c, h] [P, N] = sum_t w_t U_t V_t^T over chunk c; w_t = exp(acs_last - acs_t) dt_t (STATE) or
    exp(acs_t). U [b, L, h, P] (x or dy), V [b, L, g, N] (B or C), DT [b, L, h], ACS [b, h, L], OUT fp32."""
    bh, c = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    g = h // HG
    n_chunks = tl.cdiv(L, Q)
    p, n, k = tl.arange(0, BP), tl.arange(0, BN), tl.arange(0, BK)
    acs_base, lo_base = ACS + bh.to(tl.int64) * L, ACS_LO + bh.to(tl.int64) * L
    acs_last, lo_last = tl.load(acs_base + c * Q + Q - 1), tl.load(lo_base + c * Q + Q - 1)
    acc = tl.zeros((BP, BN), dtype=tl.float32)
    for k0 in range(0, Q, BK):
        t = c * Q + k0 + k
        valid = (k0 + k) < Q
        acs = tl.load(acs_base + t, mask=valid, other=0.0)
        if STATE:
            dt = tl.load(DT + b.to(tl.int64) * sdt_b + t * sdt_l + h, mask=valid, other=0.0)
            w = tl.exp((acs_last - acs) + (lo_last - tl.load(lo_base + t, mask=valid, other=0.0))) * dt
        else:
            w = tl.exp(acs)
        w = tl.where(valid, w, 0.0)
        u = tl.load(U + b.to(tl.int64) * su_b + t[:, None] * su_l + h * su_h + p[None, :],
                    mask=valid[:, None] & (p[None, :] < P), other=0.0).to(tl.float32)
        v = tl.load(V + b.to(tl.int64) * sv_b + t[:, None] * sv_l + g * sv_g + n[None, :],
                    mask=valid[:, None] & (n[None, :] < N), other=0.0).to(tl.float32)
        acc += _dot(tl.trans(u * w[:, None]), v, LOWP)
    out = OUT + ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
    tl.store(out + p[:, None] * N + n[None, :], acc, mask=(p[:, None] < P) & (n[None, :] < N))


@triton.jit
def _state_pass_fwd_kernel(S, ACS, H0, HS, HT, L, H, P, N, Q,
                           HAS_H0: tl.constexpr, BPS: tl.constexpr, BN: tl.constexpr):
    """HS[b, c, h] = the state entering chunk c; H <- exp(acs_last) H + S_c; HT = the final state. All [P, N] fp32,
    S and HS [b, n_chunks, h, P, N], H0 and HT [b, h, P, N]. A program owns BPS rows of the state (the loop over
    chunks is sequential: more programs hide more of its latency)."""
    bh, pb = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(L, Q)
    p, n = pb * BPS + tl.arange(0, BPS), tl.arange(0, BN)
    tile = p[:, None] * N + n[None, :]
    mask = (p[:, None] < P) & (n[None, :] < N)
    if HAS_H0:
        state = tl.load(H0 + bh.to(tl.int64) * P * N + tile, mask=mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BPS, BN), dtype=tl.float32)
    for c in range(0, n_chunks):
        at = ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
        tl.store(HS + at + tile, state, mask=mask)
        decay = tl.exp(tl.load(ACS + bh.to(tl.int64) * L + c * Q + Q - 1))
        state = decay * state + tl.load(S + at + tile, mask=mask, other=0.0)
    tl.store(HT + bh.to(tl.int64) * P * N + tile, state, mask=mask)


@triton.jit
def _cb_kernel(B, C, CB, L, G, N, Q, NBLK, sb_b, sb_l, sb_g,
               BI: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr):
    """CB[b, c, g] [Q, Q] fp32 = C_i . B_j for one block pair (rows ib >= columns jb) of chunk c: once per group,
    read by every head of it (B, C [b, L, g, N]; pairs above the diagonal are never read and stay unwritten)."""
    q, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # grid (pairs * G, chunks, batch): pairs fastest
    g, pair = q // (NBLK * NBLK), q % (NBLK * NBLK)
    ib, jb = pair // NBLK, pair % NBLK
    if jb > ib:
        return
    n_chunks = tl.cdiv(L, Q)
    r, n = tl.arange(0, BI), tl.arange(0, BN)
    pos_i, pos_j = ib * BI + r, jb * BI + r
    valid_i, valid_j = pos_i < Q, pos_j < Q
    c_i = tl.load(C + b.to(tl.int64) * sb_b + (c * Q + pos_i)[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_i[:, None] & (n[None, :] < N), other=0.0)
    b_j = tl.load(B + b.to(tl.int64) * sb_b + (c * Q + pos_j)[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_j[:, None] & (n[None, :] < N), other=0.0)
    blk = ((b.to(tl.int64) * n_chunks + c) * G + g) * Q * Q + pos_i[:, None] * Q + pos_j[None, :]
    tl.store(CB + blk, _dot(c_i, tl.trans(b_j), LOWP), mask=valid_i[:, None] & valid_j[None, :])


@triton.jit
def _chunk_out_fwd_kernel(X, DT, ACS, ACS_LO, C, CB, HS, D, Y, L, H, HG, P, N, Q, NBLK,
                          sx_b, sx_l, sx_h, sb_b, sb_l, sb_g, sdt_b, sdt_l,
                          BI: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr,
                          HAS_D: tl.constexpr, D_CH: tl.constexpr):
    """Y[b, i, h] for the rows of one block of chunk c: the masked mix within the chunk (CB from _cb_kernel) plus
    exp(acs_i) H_c C_i, plus D x_i (HAS_D; D [h] fp32, or [h, P] with D_CH). X, Y [b, L, h, P] (Y in X's dtype, X's
    strides); C [b, L, g, N]; CB [b, n_chunks, g, Q, Q] fp32; HS [b, n_chunks, h, P, N] fp32."""
    # grid (row blocks * heads, chunks, batch): the row blocks of one (head, chunk), which share its entering state and
    # x, run next to each other (L2), then the heads, which share CB
    q, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    h, ib = q // NBLK, q % NBLK
    bh = b * H + h
    G = H // HG
    g = h // HG
    n_chunks = tl.cdiv(L, Q)
    r, p, n = tl.arange(0, BI), tl.arange(0, BP), tl.arange(0, BN)
    pos_i = ib * BI + r
    valid_i = pos_i < Q
    t_i = c * Q + pos_i
    acs_base, lo_base = ACS + bh.to(tl.int64) * L, ACS_LO + bh.to(tl.int64) * L
    acs_i = tl.load(acs_base + t_i, mask=valid_i, other=0.0)
    lo_i = tl.load(lo_base + t_i, mask=valid_i, other=0.0)
    c_i = tl.load(C + b.to(tl.int64) * sb_b + t_i[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_i[:, None] & (n[None, :] < N), other=0.0)
    hs = HS + ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
    h_t = tl.load(hs + p[None, :] * N + n[:, None], mask=(p[None, :] < P) & (n[:, None] < N), other=0.0)  # [N, P]
    y = _dot(c_i, h_t, LOWP) * tl.exp(acs_i)[:, None]
    cb_base = CB + ((b.to(tl.int64) * n_chunks + c) * G + g) * Q * Q
    for jb in range(0, ib + 1):
        pos_j = jb * BI + r
        valid_j = pos_j < Q
        t_j = c * Q + pos_j
        acs_j = tl.load(acs_base + t_j, mask=valid_j, other=0.0)
        lo_j = tl.load(lo_base + t_j, mask=valid_j, other=0.0)
        dt_j = tl.load(DT + b.to(tl.int64) * sdt_b + t_j * sdt_l + h, mask=valid_j, other=0.0)
        causal = (pos_i[:, None] >= pos_j[None, :]) & valid_i[:, None] & valid_j[None, :]
        cb = tl.load(cb_base + pos_i[:, None] * Q + pos_j[None, :], mask=causal, other=0.0)
        x_j = tl.load(X + b.to(tl.int64) * sx_b + t_j[:, None] * sx_l + h * sx_h + p[None, :],
                      mask=valid_j[:, None] & (p[None, :] < P), other=0.0)
        decay = tl.exp(tl.where(causal, _seg(acs_i, lo_i, acs_j, lo_j), -float("inf")))
        y += _dot(cb * decay * dt_j[None, :], x_j, LOWP)
    if HAS_D:  # the skip connection here, so that y leaves in x's dtype (no fp32 [b, L, h, P] round trips in torch)
        x_i = tl.load(X + b.to(tl.int64) * sx_b + t_i[:, None] * sx_l + h * sx_h + p[None, :],
                      mask=valid_i[:, None] & (p[None, :] < P), other=0.0).to(tl.float32)
        if D_CH:
            y += x_i * tl.load(D + h * P + p, mask=p < P, other=0.0)[None, :]
        else:
            y += x_i * tl.load(D + h)
    y_ptr = Y + b.to(tl.int64) * sx_b + t_i[:, None] * sx_l + h * sx_h + p[None, :]
    tl.store(y_ptr, y.to(Y.dtype.element_ty), mask=valid_i[:, None] & (p[None, :] < P))


@triton.jit
def _state_pass_bwd_kernel(G, ACS, HS, DHT, DS, DDECAY, DH0, L, H, P, N, Q,
                           HAS_DHT: tl.constexpr, BPS: tl.constexpr, BN: tl.constexpr):
    """The reverse of the state passing, BPS rows of the state per program. dH (the gradient of the state leaving
    chunk c) starts at DHT; per chunk c (last first): DS[c] = dH (in DS's dtype: the backward only multiplies it on
    the tensor cores); DDECAY[b, h, c, pb] = this program's rows of sum(dH * H_c) exp(acs_last) (the gradient of
    acs_last through the decay); dH <- exp(acs_last) dH + G_c. DH0 = the gradient of the initial state. G, HS, DS
    [b, n_chunks, h, P, N]; DDECAY [b, h, n_chunks, cdiv(P, BPS)]."""
    bh, pb = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    n_chunks = tl.cdiv(L, Q)
    n_pb = tl.num_programs(1)
    p, n = pb * BPS + tl.arange(0, BPS), tl.arange(0, BN)
    tile = p[:, None] * N + n[None, :]
    mask = (p[:, None] < P) & (n[None, :] < N)
    if HAS_DHT:
        dstate = tl.load(DHT + bh.to(tl.int64) * P * N + tile, mask=mask, other=0.0).to(tl.float32)
    else:
        dstate = tl.zeros((BPS, BN), dtype=tl.float32)
    for k in range(0, n_chunks):
        c = n_chunks - 1 - k
        at = ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
        tl.store(DS + at + tile, dstate.to(DS.dtype.element_ty), mask=mask)
        decay = tl.exp(tl.load(ACS + bh.to(tl.int64) * L + c * Q + Q - 1))
        h_c = tl.load(HS + at + tile, mask=mask, other=0.0)
        tl.store(DDECAY + (bh.to(tl.int64) * n_chunks + c) * n_pb + pb, tl.sum(tl.sum(dstate * h_c, 1), 0) * decay)
        dstate = decay * dstate + tl.load(G + at + tile, mask=mask, other=0.0)
    tl.store(DH0 + bh.to(tl.int64) * P * N + tile, dstate, mask=mask)


# ---------------------------------------------------------------------------------------------- launchers

def _lowp(x) -> int:
    """_dot's mode: 16-bit inputs multiply in bf16 on the tensor cores (fp16 in the interpreter, whose bf16 dot is
    broken), fp32 inputs exactly in fp32."""
    if x.dtype not in (torch.bfloat16, torch.float16):
        return 0
    return 2 if os.environ.get("TRITON_INTERPRET") == "1" else 1


def _sizes(x, B, Q):
    batch, L, H, P = x.shape
    G, N = B.shape[2:]
    bi = min(BLOCK, _pow2(Q))
    return batch, L, H, P, G, N, L // Q, bi, _pow2(P, FEATURE_TILE), _pow2(N, FEATURE_TILE)


def _chunk_outer(u, v, dt, acs, acs_lo, Q, state: bool, lowp: int):
    """sum over each chunk of w_t u_t v_t^T: [batch, n_chunks, heads, P, N] fp32 (see _chunk_outer_kernel)."""
    batch, L, H, P, G, N, n_chunks, bi, bp, bn = _sizes(u, v, Q)
    out = torch.empty(batch, n_chunks, H, P, N, device=u.device, dtype=torch.float32)
    _chunk_outer_kernel[(batch * H, n_chunks)](
        u, v, dt, acs, acs_lo, out, L, H, H // G, P, N, Q, u.stride(0), u.stride(1), u.stride(2),
        v.stride(0), v.stride(1), v.stride(2), dt.stride(0), dt.stride(1),
        STATE=state, BK=bi, BP=bp, BN=bn, LOWP=lowp, **LAUNCH["chunk_outer"])
    return out


def ssd_core_forward(x, dt, acs, acs_lo, B, C, D, h0, Q):
    """x [b, L, h, P], dt [b, L, h] fp32, acs [b, h, L] fp32, B, C [b, L, g, N], D [h] or [h, P] fp32 or None, h0
    [b, h, P, N] or None, with L a multiple of Q. Returns y [b, L, h, P] in x's dtype (D x included), the final
    state [b, h, P, N] fp32, the entering states HS."""
    batch, L, H, P, G, N, n_chunks, bi, bp, bn = _sizes(x, B, Q)
    S = _chunk_outer(x, B, dt, acs, acs_lo, Q, state=True, lowp=_lowp(x))
    HS = torch.empty_like(S)
    HT = torch.empty(batch, H, P, N, device=x.device, dtype=torch.float32)
    _state_pass_fwd_kernel[(batch * H, triton.cdiv(P, BPS))](S, acs, h0 if h0 is not None else HT, HS, HT, L, H, P,
                                                             N, Q, HAS_H0=h0 is not None, BPS=BPS, BN=bn,
                                                             **LAUNCH["state_pass_fwd"])
    nblk = triton.cdiv(Q, bi)
    CB = torch.empty(batch, n_chunks, G, Q, Q, device=x.device, dtype=torch.float32)
    _cb_kernel[(nblk * nblk * G, n_chunks, batch)](B, C, CB, L, G, N, Q, nblk, B.stride(0), B.stride(1), B.stride(2),
                                                   BI=bi, BN=bn, LOWP=_lowp(x), **LAUNCH["cb"])
    y = torch.empty_like(x)
    assert y.stride() == x.stride(), "x must be contiguous"
    _chunk_out_fwd_kernel[(nblk * H, n_chunks, batch)](
        x, dt, acs, acs_lo, C, CB, HS, D if D is not None else x, y, L, H, H // G, P, N, Q, nblk, x.stride(0),
        x.stride(1), x.stride(2), B.stride(0), B.stride(1), B.stride(2), dt.stride(0), dt.stride(1), BI=bi, BP=bp,
        BN=bn, LOWP=_lowp(x), HAS_D=D is not None, D_CH=D is not None and D.dim() == 2,
        **LAUNCH["chunk_out_fwd"])
    return y, HT, HS


class _SSDCore(torch.autograd.Function):
    """(x, dt, acs, acs_lo, B, C, D, h0) -> (y in x's dtype, final state fp32), L a multiple of the chunk size Q (T
    steps before the padding), acs + acs_lo the log decays as two floats (no gradient for acs_lo), D fp32 or None;
    see the module doc."""

    @staticmethod
    def forward(ctx, x, dt, acs, acs_lo, B, C, D, h0, Q, T):
        y, hT, HS = ssd_core_forward(x, dt, acs, acs_lo, B, C, D, h0, Q)
        ctx.save_for_backward(x, dt, acs, acs_lo, B, C, D, HS)
        ctx.Q, ctx.T, ctx.has_h0 = Q, T, h0 is not None
        ctx.dtypes = (x.dtype, B.dtype, C.dtype, None if h0 is None else h0.dtype)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, acs, acs_lo, B, C, D, HS = ctx.saved_tensors
        dy = dy.contiguous() if dy is not None else torch.zeros_like(x)
        from hybrid.kernels.ssd.triton_bwd import ssd_core_backward
        dx, ddt, dacs, dB, dC, dD, dh0 = ssd_core_backward(x, dt, acs, acs_lo, B, C, D, HS, dy,
                                                           None if dhT is None else dhT.contiguous(), ctx.Q, ctx.T)
        x_t, b_t, c_t, h_t = ctx.dtypes
        return (dx.to(x_t), ddt, dacs, None, dB.to(b_t), dC.to(c_t), dD, dh0.to(h_t) if ctx.has_h0 else None,
                None, None)


def ssd_triton(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
               dt_limit=(0.0, math.inf), initial_states=None, return_final_states=False):
    """The SSD of `hybrid.kernels.ssd.reference.ssd_sequential` on our Triton kernels (same arguments and shapes).

    fp32, fp16, bf16 inputs (state and accumulation fp32; fp64 is refused: use backend='reference'). Returns y in
    x's dtype and, with return_final_states, the final state [batch, heads, head_dim, N] fp32."""
    if x.dtype == torch.float64:
        raise ValueError("ssd backend 'triton' computes in fp32; for float64 inputs use backend='reference'")
    batch, L, heads, head_dim = x.shape
    Q = chunk_size
    pad = (-L) % Q
    # dt's bias, softplus and clamp and the log decay from each chunk's start (fp64 sums handed over as two floats:
    # acs, through which the gradient flows, and acs_lo, what fp32 rounded off; see _seg), fused: dt_decays.py
    dts, acs, acs_lo = DtDecays.apply(dt, A, dt_bias, dt_softplus, dt_limit, Q, L + pad)  # [b, Lp, h], [b, h, Lp] x2
    xs, Bs, Cs = x, B, C
    if pad:  # dt = 0 past L (dts above): no decay, no input, so the final state is the state at step L
        xs, Bs, Cs = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
    h0 = None if initial_states is None else initial_states.float().contiguous()
    Df = None if D is None else D.float().contiguous()  # its gradient comes back in fp32, autograd casts it to D's
    y, hT = _SSDCore.apply(xs.contiguous(), dts, acs, acs_lo, Bs.contiguous(), Cs.contiguous(), Df, h0, Q, L)
    y = y[:, :L]
    if z is not None:  # the gate in fp32 on y (already in x's dtype: one rounding more for 16-bit inputs)
        y = _finish(y.float(), None, None, z, torch.float32).to(x.dtype)
    return (y, hT) if return_final_states else y
