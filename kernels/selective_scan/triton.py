"""Our Triton selective scan (Mamba-1), forward and backward, deterministic. Design notes: README.md beside this.

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t ;  y_t = <C_t, h_t> + D u_t ;  y_t *= silu(z_t)

One program per (batch, block of channels) walks the sequence in tiles of `chunk` steps. A tile is [channels, steps]:
the compiler lays the steps along the lanes of a warp (several consecutive steps per thread) and the channels over
the warps, so one tile's recurrence is a time-parallel `tl.associative_scan` across the lanes, and thousands of
independent scans are in flight. The states are visited one at a time inside a tile (an unrolled loop over N), their
carries between tiles kept in registers. The forward saves the state entering every tile
([batch, dim, n_tiles, N] fp32); the backward walks the tiles in reverse, recomputes each state's scan from that and
reverse-scans its gradient. dB, dC (sums over channels) are written as per-block partials and reduced by torch in a
fixed order: no atomics, bitwise repeatable.
Order in this file: tile helpers -> kernels -> launchers -> torch.library custom ops (+ autograd) -> public function.
"""
import os

import torch
import triton
import triton.language as tl

# Tile shapes (README "Tiles"). chunk: steps per tile = steps between saved states (both kernels). *_block_d:
# channels per program; *_warps: warps per program; bwd_segments: backward launches along the sequence (each holds
# the dB/dC partials of its segment only: peak memory). Defaults: the fastest of the H100 sweep
# (bench/results/scan_h100_notes.md), forward and backward timed apart.
CONFIG = dict(chunk=32, fwd_block_d=8, fwd_warps=1, bwd_block_d=8, bwd_warps=1, bwd_segments=8)
_KEYS = tuple(CONFIG)
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _exp2(x, FAST_EXP: tl.constexpr):
    # ex2.approx.ftz skips the denormal range fix-up (a compare and two multiplies) of tl.exp2
    if FAST_EXP:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def _fwd_combine(a1, b1, a2, b2):
    # x -> a1 x + b1, then x -> a2 x + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _bwd_combine(a_r, p_r, g_r, a_l, p_l, g_l):
    # The reverse scan of g_t = c_t + a_{t+1} g_{t+1}. A segment [s..e] is (a_s, prod_{s<t<=e} a_t, g_s); Triton's
    # reverse scan passes the later segment (r) first. Coefficients shifted by one step need no shifted loads.
    m = p_l * a_r
    return a_l, m * p_r, g_l + m * g_r


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _load_delta(ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta tile [BD, T] in fp32 after bias and softplus, 0 where masked (so exp(0 * A) = 1 there: padded steps
    pass the state through), and the pre-softplus value."""
    raw = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _state_row(B_ptr, row, n, dd64, s0, s1, tg, rep, mask, dmask, SEL: tl.constexpr):
    """State n's B (or C) for the tile, fp32: selective [BD, T] (row: this batch's base pointer; `rep`, zeros
    [BD, 1], gives the load the tile's shape, so it needs no layout conversion) or LTI [BD, 1]."""
    if SEL:
        return tl.load(row + n * s0 + tg[None, :] * s1 + rep, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.load(B_ptr + dd64 * s0 + n * s1, mask=dmask, other=0.0).to(tl.float32)[:, None]


@triton.jit
def _column(x, nn, n):
    """column n of a [BD, WS] per-state table -> [BD]"""
    return tl.sum(tl.where(nn[None, :] == n, x, 0.0), 1)


@triton.jit
def _add_column(x, nn, n, v):
    """x with v [BD] added to column n (no read of the column: no reduction across lanes)"""
    return x + tl.where(nn[None, :] == n, v[:, None], 0.0)


@triton.jit
def _set_column(x, nn, n, v):
    """x with column n replaced by v [BD]"""
    return tl.where(nn[None, :] == n, v[:, None], x)


# Per-state values carried between tiles (state, state gradient, dA sums) live in [BD, WS] tables, column n for state
# n, WS = max(T, N rounded up): when WS = T a table has the tile's layout, so reading or writing a column needs no
# layout conversion (a [BD, N] table would get its own layout and cost two shared-memory round trips per state).


@triton.jit
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
                y_ptr, last_ptr, states_ptr,
                L, dim, n_tiles,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_yb, s_yd, s_yl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, WS: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE: tl.constexpr,
                FAST_EXP: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = dd < dim
    dd64 = dd.to(tl.int64)
    tt = tl.arange(0, T)
    nn = tl.arange(0, WS)
    chan = pid_b * dim + dd64  # [BD] row of this channel in [batch, dim, ...] buffers
    s_mask = dmask[:, None] & (nn[None, :] < N)  # [BD, WS]
    s_off = chan[:, None] * N + nn[None, :]
    if HAS_H0:
        h_all = tl.load(h0_ptr + s_off, mask=s_mask, other=0.0)
    else:
        h_all = tl.zeros((BD, WS), dtype=tl.float32)
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    rep = (dd64 * 0)[:, None]
    u_row = u_ptr + pid_b * s_ub + dd64[:, None] * s_ud  # [BD, 1]
    t_row = delta_ptr + pid_b * s_tb + dd64[:, None] * s_td
    z_row = z_ptr + pid_b * s_zb + dd64[:, None] * s_zd
    y_row = y_ptr + pid_b * s_yb + dd64[:, None] * s_yd  # y in u's layout
    b_row = B_ptr + pid_b * s_bb
    c_row = C_ptr + pid_b * s_cb
    first = tt[None, :] == 0
    last = tt[None, :] == T - 1
    for c in range(n_tiles):
        tg = c * T + tt.to(tl.int64)  # [T] global step
        tmask = tg < L
        m2 = dmask[:, None] & tmask[None, :]  # [BD, T]
        mt = tmask[None, :] & (rep == 0)  # [BD, T], the same for every channel
        dt, _ = _load_delta(t_row + tg[None, :] * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_row + tg[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
        dt2 = dt * LOG2E  # exp(dt A) = exp2(dt2 A)
        dtu = dt * u
        if HAS_D:
            y = Dv[:, None] * u
        else:
            y = tl.zeros((BD, T), dtype=tl.float32)
        if SAVE:  # the states entering the tile, one store per tile
            tl.store(states_ptr + (chan[:, None] * n_tiles + c) * N + nn[None, :], h_all, mask=s_mask)
        h_prev = h_all  # read the carries from here, write them to h_all: the states' scans stay independent
        for n in tl.static_range(N):
            A = tl.load(A_ptr + dd64 * s_a0 + n * s_a1, mask=dmask, other=0.0).to(tl.float32)
            Bn = _state_row(B_ptr, b_row, n, dd64, s_b0, s_b1, tg, rep, mt, dmask, B_SEL)
            a = _exp2(dt2 * A[:, None], FAST_EXP)
            b = dtu * Bn
            h_in = _column(h_prev, nn, n)
            b = tl.where(first, b + a * h_in[:, None], b)  # the carry enters at the tile's first step
            _, h = tl.associative_scan((a, b), 1, _fwd_combine)
            Cn = _state_row(C_ptr, c_row, n, dd64, s_c0, s_c1, tg, rep, mt, dmask, C_SEL)
            y += h * Cn
            # padded steps (t >= L) have a = 1, b = 0: the last column is the state at min(tile end, L) - 1
            h_all = _set_column(h_all, nn, n, tl.sum(tl.where(last, h, 0.0), 1))
        if HAS_Z:
            zz = tl.load(z_row + tg[None, :] * s_zl, mask=m2, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(y_row + tg[None, :] * s_yl, y, mask=m2)
    tl.store(last_ptr + s_off, h_all, mask=s_mask)


@triton.jit
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                L, dim, n_tiles, c_start, c_count, p_len,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_ob, s_od, s_ol,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, WS: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = dd < dim
    dd64 = dd.to(tl.int64)
    tt = tl.arange(0, T)
    nn = tl.arange(0, WS)
    chan = pid_b * dim + dd64
    s_mask = dmask[:, None] & (nn[None, :] < N)
    s_off = chan[:, None] * N + nn[None, :]
    if HAS_DLAST:  # gradient of the state at the end of the current tile, flowing in from later steps
        g_all = tl.load(dlast_ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        g_all = tl.zeros((BD, WS), dtype=tl.float32)
    dA_all = tl.zeros((BD, WS), dtype=tl.float32)
    dB_all = tl.zeros((BD, WS), dtype=tl.float32)  # LTI only
    dC_all = tl.zeros((BD, WS), dtype=tl.float32)  # LTI only
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    rep = (dd64 * 0)[:, None]
    u_row = u_ptr + pid_b * s_ub + dd64[:, None] * s_ud
    t_row = delta_ptr + pid_b * s_tb + dd64[:, None] * s_td
    z_row = z_ptr + pid_b * s_zb + dd64[:, None] * s_zd
    g_row = dy_ptr + pid_b * s_gb + dd64[:, None] * s_gd
    out_row = pid_b * s_ob + dd64[:, None] * s_od  # du, ddelta, dz: [batch, dim, L] in u's layout
    b_row = B_ptr + pid_b * s_bb
    c_row = C_ptr + pid_b * s_cb
    # this block's [N, p_len] dB/dC partials of the segment's steps (tiles c_start .. c_start + c_count - 1)
    part = (pid_b * tl.num_programs(1) + tl.program_id(1)) * N * p_len
    p0 = c_start * T
    first = tt[None, :] == 0
    last = tt[None, :] == T - 1
    ones = tl.full((BD, T), 1.0, tl.float32)  # the products' start in the reverse scan's segments
    for i in range(c_count):
        c = c_start + c_count - 1 - i
        tg = c * T + tt.to(tl.int64)
        tmask = tg < L
        m2 = dmask[:, None] & tmask[None, :]
        mt = tmask[None, :] & (rep == 0)
        dt, raw = _load_delta(t_row + tg[None, :] * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_row + tg[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(g_row + tg[None, :] * s_gl, mask=m2, other=0.0).to(tl.float32)
        dt2 = dt * LOG2E
        dtu = dt * u
        if HAS_Z:
            zz = tl.load(z_row + tg[None, :] * s_zl, mask=m2, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            dy = dout * zz * sg
        else:
            dy = dout
        if HAS_D:
            y = Dv[:, None] * u  # the pre-gate output, for dz
            du = Dv[:, None] * dy
        else:
            y = tl.zeros((BD, T), dtype=tl.float32)
            du = tl.zeros((BD, T), dtype=tl.float32)
        ddt = tl.zeros((BD, T), dtype=tl.float32)
        h_tile = tl.load(states_ptr + (chan[:, None] * n_tiles + c) * N + nn[None, :], mask=s_mask, other=0.0)
        g_prev = g_all  # as h_prev in the forward
        for n in tl.static_range(N):
            A = tl.load(A_ptr + dd64 * s_a0 + n * s_a1, mask=dmask, other=0.0).to(tl.float32)
            Bn = _state_row(B_ptr, b_row, n, dd64, s_b0, s_b1, tg, rep, mt, dmask, B_SEL)
            Cn = _state_row(C_ptr, c_row, n, dd64, s_c0, s_c1, tg, rep, mt, dmask, C_SEL)
            # recompute the tile's states of state n from the saved state entering the tile
            a = _exp2(dt2 * A[:, None], FAST_EXP)
            b = dtu * Bn
            h_in = _column(h_tile, nn, n)
            _, h = tl.associative_scan((a, tl.where(first, b + a * h_in[:, None], b)), 1, _fwd_combine)
            if HAS_Z:
                y += h * Cn
            # state gradient g_t = C_t dy_t + a_{t+1} g_{t+1}; the carry enters at the tile's last step
            cg = dy * Cn
            cg = tl.where(last, cg + _column(g_prev, nn, n)[:, None], cg)
            _, _, g = tl.associative_scan((a, ones, cg), 1, _bwd_combine, reverse=True)
            g_all = _set_column(g_all, nn, n, tl.sum(tl.where(first, a * g, 0.0), 1))
            gah = g * (h - b)  # g_t a_t h_{t-1}
            dA_all = _add_column(dA_all, nn, n, tl.sum(gah * dt, 1))
            gB = g * Bn
            ddt += gB * u + gah * A[:, None]
            du += gB * dt
            if B_SEL:  # dB_t = sum over channels of g_t delta_t u_t: this block's partial
                tl.store(dBp_ptr + part + n * p_len + (tg - p0), tl.sum(g * dtu, 0), mask=tmask)
            else:
                dB_all = _add_column(dB_all, nn, n, tl.sum(g * dtu, 1))
            if C_SEL:  # dC_t = sum over channels of dy_t h_t
                tl.store(dCp_ptr + part + n * p_len + (tg - p0), tl.sum(dy * h, 0), mask=tmask)
            else:
                dC_all = _add_column(dC_all, nn, n, tl.sum(dy * h, 1))
        if HAS_Z:
            tl.store(dz_ptr + out_row + tg[None, :] * s_ol, dout * y * sg * (1.0 + zz * (1.0 - sg)), mask=m2)
        if HAS_D:
            dD_acc += tl.sum(dy * u, 1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)  # padded steps have a nonzero g (A) term; keep it out of dbias
        dbias_acc += tl.sum(ddt, 1)
        tl.store(du_ptr + out_row + tg[None, :] * s_ol, du, mask=m2)
        tl.store(ddelta_ptr + out_row + tg[None, :] * s_ol, ddt, mask=m2)
    tl.store(dh0_ptr + s_off, g_all, mask=s_mask)
    tl.store(dA_ptr + s_off, dA_all, mask=s_mask)
    if not B_SEL:
        tl.store(dBp_ptr + s_off, dB_all, mask=s_mask)
    if not C_SEL:
        tl.store(dCp_ptr + s_off, dC_all, mask=s_mask)
    if HAS_D:
        tl.store(dD_ptr + chan, dD_acc, mask=dmask)
    if HAS_BIAS:
        tl.store(dbias_ptr + chan, dbias_acc, mask=dmask)


@triton.jit
def _sum_partials_kernel(p_ptr, out_ptr, n_part, L, NL, s_pb, s_pk, s_pn, s_ob, s_on, s_ol, BLOCK: tl.constexpr):
    """out[b, n, t] = sum over k in order of p[b, k, n, t] (p: [batch, n_part, N, >= L] fp32, steps contiguous; out
    [batch, N, L] in its own dtype and strides): the fixed-order reduction of the dB/dC partials, with no fp32
    [batch, N, L] copy."""
    pid_b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = j < NL
    n, t = j // L, j % L
    src = p_ptr + pid_b * s_pb + n * s_pn + t
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(n_part):
        acc += tl.load(src + k * s_pk, mask=mask, other=0.0)
    tl.store(out_ptr + pid_b * s_ob + n * s_on + t * s_ol, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _sum_partials(p: torch.Tensor, out: torch.Tensor) -> None:
    """out [batch, N, L] (any dtype and strides) = p [batch, n_part, N, >= L] fp32 partials summed over n_part in
    order."""
    batch, N, L = out.shape
    BLOCK = 1024
    _sum_partials_kernel[(batch, triton.cdiv(N * L, BLOCK))](p, out, p.shape[1], L, N * L, *p.stride()[:3],
                                                            *out.stride(), BLOCK=BLOCK)


@triton.jit
def exp_throughput_kernel(x_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """ITERS exponentials per element of x [programs * BLOCK] fp32, in registers: the measured exp rate behind the
    exp floor of hybrid.bench.scan (the same ex2 instruction as the scan kernels)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    for _ in range(ITERS):
        x = _exp2(x * -0.5, True)
    tl.store(x_ptr + offs, x)


# ----------------------------------------------------------------------------------------------------------------
# launchers

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _bc_strides(X: torch.Tensor) -> tuple[int, int, int]:
    """(batch, N, L) strides of a selective B/C [batch, N, L], or (0, dim, N) strides of an LTI one [dim, N]."""
    return tuple(X.stride()) if X.dim() == 3 else (0, X.stride(0), X.stride(1))


def _like_u(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An empty [batch, dim, L] tensor in u's memory layout (steps contiguous when u's are, as the Mamba block makes
    them), so outputs and gradients are written in the layout the caller reads next, with no copy."""
    return torch.empty_like(u, dtype=dtype, memory_format=torch.preserve_format)


def _fast_exp(x: torch.Tensor) -> bool:
    # inline PTX only where the kernels are compiled for an NVIDIA GPU (not in the interpreter)
    return x.is_cuda and torch.version.hip is None and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, cfg):
    """Launch the forward (cfg: CONFIG's values in its key order). Returns y [batch, dim, L] (u's dtype), last state
    [batch, dim, N] fp32 and the states entering every tile of `chunk` steps [batch, dim, n_tiles, N] fp32 (empty
    unless save_states)."""
    c = dict(zip(_KEYS, cfg))
    batch, dim, L = u.shape
    N = A.shape[1]
    T = c["chunk"]
    n_tiles = triton.cdiv(L, T)
    y = _like_u(u, u.dtype)
    last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)
    states = torch.empty(batch, dim, n_tiles if save_states else 0, N, device=u.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    zz = z if z is not None else u  # dummy pointer when absent (never read)
    BD = c["fwd_block_d"]
    _fwd_kernel[(batch, triton.cdiv(dim, BD))](
        u, delta, A, B, C, D, zz, delta_bias, h0, y, last, states, L, dim, n_tiles,
        *u.stride(), *delta.stride(), *zz.stride(), *y.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        N=N, WS=max(T, triton.next_power_of_2(N)), BD=BD, T=T, B_SEL=B.dim() == 3, C_SEL=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=delta_softplus, SAVE=save_states, FAST_EXP=_fast_exp(u), num_warps=c["fwd_warps"])
    return y, last, states


def _bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, cfg):
    """Launch the backward and reduce the partials in a fixed order. Returns the gradients of
    (u, delta, A, B, C, D, z, delta_bias, initial_state), each in its input's dtype; D, z, delta_bias get an
    empty tensor when absent. The initial-state gradient is fp32 [batch, dim, N]."""
    c = dict(zip(_KEYS, cfg))
    batch, dim, L = u.shape
    N = A.shape[1]
    T = c["chunk"]
    n_tiles = triton.cdiv(L, T)
    assert states.shape == (batch, dim, n_tiles, N), "saved tile states do not match the chunk size"
    BD = c["bwd_block_d"]
    n_blk = triton.cdiv(dim, BD)
    # the sequence in segments of whole tiles, one launch each from the last: the dB/dC partials hold one segment
    # ([batch, n_blk, N, seg_len] fp32), the state gradient at a segment's start feeds the segment before it
    seg_tiles = triton.cdiv(n_tiles, c["bwd_segments"])
    n_seg = triton.cdiv(n_tiles, seg_tiles)
    seg_len = seg_tiles * T
    f32 = dict(device=u.device, dtype=torch.float32)
    du = _like_u(u, u.dtype)
    ddelta = _like_u(u, delta.dtype)
    dz = _like_u(u, z.dtype) if z is not None else u.new_empty(0)
    dB = torch.empty_like(B, memory_format=torch.preserve_format)
    dC = torch.empty_like(C, memory_format=torch.preserve_format)
    dA = torch.empty(n_seg, batch, dim, N, **f32)  # per-segment, per-batch partials
    dBp = torch.empty(batch, n_blk, N, seg_len, **f32) if B.dim() == 3 else torch.empty(n_seg, batch, dim, N, **f32)
    dCp = torch.empty(batch, n_blk, N, seg_len, **f32) if C.dim() == 3 else torch.empty(n_seg, batch, dim, N, **f32)
    dD = torch.empty(n_seg, batch, dim, **f32) if D is not None else None
    dbias = torch.empty(n_seg, batch, dim, **f32) if delta_bias is not None else None
    carry = [torch.empty(batch, dim, N, **f32) for _ in range(min(n_seg, 2))]  # state gradients, double-buffered
    zz = z if z is not None else u
    g_in = dlast
    for s in range(n_seg - 1, -1, -1):
        c0 = s * seg_tiles
        count = min(n_tiles, c0 + seg_tiles) - c0
        dh0 = carry[s % 2]
        _bwd_kernel[(batch, n_blk)](
            u, delta, A, B, C, D, zz, delta_bias, states, dy, g_in,
            du, ddelta, dz if z is not None else du, dA[s], dBp if B.dim() == 3 else dBp[s],
            dCp if C.dim() == 3 else dCp[s], dD[s] if D is not None else None,
            dbias[s] if delta_bias is not None else None, dh0, L, dim, n_tiles, c0, count, seg_len,
            *u.stride(), *delta.stride(), *zz.stride(), *dy.stride(), *du.stride(), *A.stride(), *_bc_strides(B),
            *_bc_strides(C), N=N, WS=max(T, triton.next_power_of_2(N)), BD=BD, T=T, B_SEL=B.dim() == 3,
            C_SEL=C.dim() == 3, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_DLAST=g_in is not None, SOFTPLUS=delta_softplus, FAST_EXP=_fast_exp(u), num_warps=c["bwd_warps"])
        steps = slice(c0 * T, min(L, (c0 + count) * T))
        if B.dim() == 3:  # this segment's dB, dC: fixed-order sums of the partials (deterministic)
            _sum_partials(dBp, dB[..., steps])
        if C.dim() == 3:
            _sum_partials(dCp, dC[..., steps])
        g_in = dh0
    if B.dim() != 3:
        dB = dBp.sum((0, 1)).to(B.dtype)  # [dim, N]
    if C.dim() != 3:
        dC = dCp.sum((0, 1)).to(C.dtype)
    return (du, ddelta, dA.sum((0, 1)).to(A.dtype), dB, dC,
            dD.sum((0, 1)).to(D.dtype) if D is not None else u.new_empty(0), dz,
            dbias.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else u.new_empty(0), g_in)


# ----------------------------------------------------------------------------------------------------------------
# torch.library custom ops: opaque to torch.compile (fake impls give the shapes), autograd registered on them

Tensor = torch.Tensor


@torch.library.custom_op("hybrid::selective_scan_fwd", mutates_args=())
def _fwd_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
            delta_bias: Tensor | None, initial_state: Tensor | None, delta_softplus: bool, save_states: bool,
            cfg: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    return _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, cfg)


@_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, cfg):
    batch, dim, L = u.shape
    N = A.shape[1]
    n_states = (L + cfg[0] - 1) // cfg[0] if save_states else 0
    return (torch.empty_like(u), u.new_empty(batch, dim, N, dtype=torch.float32),
            u.new_empty(batch, dim, n_states, N, dtype=torch.float32))


@torch.library.custom_op("hybrid::selective_scan_bwd", mutates_args=())
def _bwd_op(dy: Tensor, dlast: Tensor | None, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
            D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None, states: Tensor, delta_softplus: bool,
            cfg: list[int]) -> list[Tensor]:
    return list(_bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, cfg))


@_bwd_op.register_fake
def _(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, cfg):
    batch, dim, _ = u.shape
    N = A.shape[1]
    return [torch.empty_like(u), torch.empty_like(u, dtype=delta.dtype), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), torch.empty_like(D) if D is not None else u.new_empty(0),
            torch.empty_like(u, dtype=z.dtype) if z is not None else u.new_empty(0),
            torch.empty_like(delta_bias) if delta_bias is not None else u.new_empty(0),
            u.new_empty(batch, dim, N, dtype=torch.float32)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, save_states, cfg = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.cfg = (softplus, cfg)
    ctx.saved = save_states
    ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
    ctx.mark_non_differentiable(output[2])


def _backward(ctx, dy, dlast, _dstates):
    if not ctx.saved:
        raise RuntimeError("selective_scan_triton: backward through a forward that ran without saving chunk "
                           "states (inputs did not require grad, or grad mode was off)")
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    g = _bwd_op(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, *ctx.cfg)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = g
    return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            dbias if delta_bias is not None else None, dh0.to(ctx.h0_dtype) if ctx.h0_dtype is not None else None,
            None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# public function


def make_cfg(chunk_size=None, config=None) -> list[int]:
    """CONFIG updated by `config` (a dict with some of its keys) and chunk_size, checked, as the ops' int list."""
    c = dict(CONFIG, **(config or {}))
    unknown = set(c) - set(_KEYS)
    if unknown:
        raise ValueError(f"selective_scan_triton: unknown config keys {sorted(unknown)}; allowed: {list(_KEYS)}")
    if chunk_size is not None:
        c["chunk"] = chunk_size
    for k, v in c.items():
        if v < 1 or v & (v - 1):
            raise ValueError(f"selective_scan_triton: {'chunk_size' if k == 'chunk' else k}={v}; "
                             f"allowed: a power of two")
    return [int(c[k]) for k in _KEYS]


def _check(u, delta, A, B, C, D, z, delta_bias, initial_state):
    from hybrid.kernels.selective_scan.interface import check_shapes

    check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if t is not None and t.dtype not in _FLOATS:
            raise ValueError(f"selective_scan_triton: {name} has dtype {t.dtype}; allowed: fp16, bf16, fp32 "
                             f"(use backend='reference' for fp64)")


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, initial_state=None, *, chunk_size=None, config=None):
    """The selective scan with our Triton kernels (any strides; fp16, bf16, fp32 inputs; fp32 state).

    Args:
        u, delta, z: [batch, dim, L]. A: [dim, N]. B, C: [batch, N, L] (selective) or [dim, N] (LTI).
        D, delta_bias: [dim]. initial_state: [batch, dim, N].
        chunk_size: steps per tile = steps between saved states (a power of two; CONFIG["chunk"] when None).
        config: tile shapes, a dict with some of CONFIG's keys. Tiles change speed and rounding only.
    Returns:
        y [batch, dim, L] in u's dtype; with return_last_state, (y, last_state [batch, dim, N] fp32).
    """
    cfg = make_cfg(chunk_size, config)
    _check(u, delta, A, B, C, D, z, delta_bias, initial_state)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, last, _ = _fwd_op(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), save, cfg)
    return (y, last) if return_last_state else y
