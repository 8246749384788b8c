"""The selective-scan backward with the loop over states rolled (`bwd_kernel=1`; triton_kernels.py's _bwd_kernel is
`bwd_kernel=0`). Same inputs, outputs and launch as _bwd_kernel (triton.py's _bwd picks one), same arithmetic per
state and step; what differs is where the per-state values live:

- the state entering the tile is loaded per state from the saved states (a [channels] load, L1-resident) instead of
  read out of a [channels, max(T, N)] register table by a masked sum across lanes;
- the state gradient carried between tiles and the dA sums live in the kernel's own outputs (dh0, dA: [batch, dim, N]
  fp32) and are read and rewritten per state and tile; one barrier per tile orders each tile's writes before the
  next tile's reads (no atomics: every value has one writer, in a fixed order);
- u and delta gradients come from two accumulators over states, S = sum_n g B_n and Q = sum_n g a h_{t-1} A_n
  (du = delta S + D dy, ddelta = u S + Q), two multiply-adds per state and step instead of four;
- through the states loop a thread holds dt, delta u, dy, y and S, Q; u, z, dout and delta are read again after it
  (cache hits) for du, ddelta, dz.

So nothing indexes a state by a compile-time column: the states loop is a `tl.range` unrolled `UNROLL` times
(1: rolled, code 1/N the size; N: fully unrolled), and the registers a thread holds per tile drop from ~12 to ~8
[channels, steps] tiles (the tables are gone), which the compiled code shows as fewer registers and no spills.
"""
import triton
import triton.language as tl

from hybrid.kernels.selective_scan.triton_kernels import (
    LOG2E,
    _bwd_combine,
    _exp2,
    _fwd_combine,
    _load_delta,
    _state_row,
    _store_partial,
)


@triton.jit(do_not_specialize=["n_tiles", "c_start", "c_count"])  # as _bwd_kernel: one compilation for every L
def _bwd_rolled_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                       du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                       L, dim, n_tiles, c_start, c_count, p_len,
                       s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_ob, s_od, s_ol,
                       s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                       N: tl.constexpr, WS: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                       B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                       HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr,
                       FAST_EXP: tl.constexpr, HALF_PARTIALS: tl.constexpr, UNROLL: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = dd < dim
    dd64 = dd.to(tl.int64)
    tt = tl.arange(0, T)
    nn = tl.arange(0, WS)
    chan = pid_b * dim + dd64
    s_mask = dmask[:, None] & (nn[None, :] < N)
    s_off = chan[:, None] * N + nn[None, :]
    # running per-state values in the outputs: the state gradient entering from later steps, the dA sums, LTI dB/dC
    if HAS_DLAST:
        tl.store(dh0_ptr + s_off, tl.load(dlast_ptr + s_off, mask=s_mask, other=0.0), mask=s_mask)
    else:
        tl.store(dh0_ptr + s_off, tl.zeros((BD, WS), dtype=tl.float32), mask=s_mask)
    tl.store(dA_ptr + s_off, tl.zeros((BD, WS), dtype=tl.float32), mask=s_mask)
    if not B_SEL:
        tl.store(dBp_ptr + s_off, tl.zeros((BD, WS), dtype=tl.float32), mask=s_mask)
    if not C_SEL:
        tl.store(dCp_ptr + s_off, tl.zeros((BD, WS), dtype=tl.float32), mask=s_mask)
    tl.debug_barrier()
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    rep = (dd64 * 0)[:, None]
    u_row = u_ptr + pid_b * s_ub + dd64[:, None] * s_ud
    t_row = delta_ptr + pid_b * s_tb + dd64[:, None] * s_td
    z_row = z_ptr + pid_b * s_zb + dd64[:, None] * s_zd
    g_row = dy_ptr + pid_b * s_gb + dd64[:, None] * s_gd
    out_row = pid_b * s_ob + dd64[:, None] * s_od
    b_row = B_ptr + pid_b * s_bb
    c_row = C_ptr + pid_b * s_cb
    part = (pid_b * tl.num_programs(1) + tl.program_id(1)) * N * p_len
    p0 = c_start * T
    first = tt[None, :] == 0
    last = tt[None, :] == T - 1
    ones = tl.full((BD, T), 1.0, tl.float32)
    carry = dh0_ptr + chan * N  # [BD] rows of the running per-state values
    dA_row = dA_ptr + chan * N
    for i in range(c_count):
        c = c_start + c_count - 1 - i
        tg = c * T + tt.to(tl.int64)
        tmask = tg < L
        m2 = dmask[:, None] & tmask[None, :]
        mt = tmask[None, :] & (rep == 0)
        # held through the states loop: dt, dtu, dy, y and the two sums; u, delta's sigmoid and the gate are read
        # again after it (cache hits), so fewer tiles are live while the scans run
        dt, _ = _load_delta(t_row + tg[None, :] * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_row + tg[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(g_row + tg[None, :] * s_gl, mask=m2, other=0.0).to(tl.float32)
        dtu = dt * u
        if HAS_Z:
            zz = tl.load(z_row + tg[None, :] * s_zl, mask=m2, other=0.0).to(tl.float32)
            dy = dout * zz * tl.sigmoid(zz)
        else:
            dy = dout
        if HAS_D:
            y = Dv[:, None] * u
        else:
            y = tl.zeros((BD, T), dtype=tl.float32)
        S = tl.zeros((BD, T), dtype=tl.float32)  # sum_n g B_n
        Q = tl.zeros((BD, T), dtype=tl.float32)  # sum_n g a h_{t-1} A_n
        h_tile = states_ptr + (chan * n_tiles + c) * N
        for n in tl.range(0, N, loop_unroll_factor=UNROLL):
            A = tl.load(A_ptr + dd64 * s_a0 + n * s_a1, mask=dmask, other=0.0).to(tl.float32)
            Bn = _state_row(B_ptr, b_row, n, dd64, s_b0, s_b1, tg, rep, mt, dmask, B_SEL)
            Cn = _state_row(C_ptr, c_row, n, dd64, s_c0, s_c1, tg, rep, mt, dmask, C_SEL)
            a = _exp2(dt * (A * LOG2E)[:, None], FAST_EXP)
            b = dtu * Bn
            h_in = tl.load(h_tile + n, mask=dmask, other=0.0)
            _, h = tl.associative_scan((a, tl.where(first, b + a * h_in[:, None], b)), 1, _fwd_combine)
            if HAS_Z:
                y += h * Cn
            g_in = tl.load(carry + n, mask=dmask, other=0.0)
            cg = dy * Cn
            cg = tl.where(last, cg + g_in[:, None], cg)
            _, _, g = tl.associative_scan((a, ones, cg), 1, _bwd_combine, reverse=True)
            tl.store(carry + n, tl.sum(tl.where(first, a * g, 0.0), 1), mask=dmask)
            gah = g * (h - b)  # g_t a_t h_{t-1}
            dA_n = tl.load(dA_row + n, mask=dmask, other=0.0)
            tl.store(dA_row + n, dA_n + tl.sum(gah * dt, 1), mask=dmask)
            S += g * Bn
            Q += gah * A[:, None]
            if B_SEL:
                _store_partial(dBp_ptr + part + n * p_len, tg - p0, g * dtu, tmask, mt, rep, dd64, BD, T,
                               HALF_PARTIALS)
            else:
                dB_n = tl.load(dBp_ptr + chan * N + n, mask=dmask, other=0.0)
                tl.store(dBp_ptr + chan * N + n, dB_n + tl.sum(g * dtu, 1), mask=dmask)
            if C_SEL:
                _store_partial(dCp_ptr + part + n * p_len, tg - p0, dy * h, tmask, mt, rep, dd64, BD, T,
                               HALF_PARTIALS)
            else:
                dC_n = tl.load(dCp_ptr + chan * N + n, mask=dmask, other=0.0)
                tl.store(dCp_ptr + chan * N + n, dC_n + tl.sum(dy * h, 1), mask=dmask)
        tl.debug_barrier()  # this tile's carries and sums are written before the next tile reads them
        u = tl.load(u_row + tg[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:  # dz = dout y sigmoid(z) (1 + z (1 - sigmoid(z))), y the pre-gate output
            zz = tl.load(z_row + tg[None, :] * s_zl, mask=m2, other=0.0).to(tl.float32)
            dout = tl.load(g_row + tg[None, :] * s_gl, mask=m2, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            tl.store(dz_ptr + out_row + tg[None, :] * s_ol, dout * y * sg * (1.0 + zz * (1.0 - sg)), mask=m2)
        du = dt * S
        if HAS_D:
            du += Dv[:, None] * dy
            dD_acc += tl.sum(dy * u, 1)
        ddt = u * S + Q
        if SOFTPLUS:
            _, raw = _load_delta(t_row + tg[None, :] * s_tl, m2, bias, HAS_BIAS, False)
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)  # padded steps have a nonzero g (A) term; keep it out of dbias
        dbias_acc += tl.sum(ddt, 1)
        tl.store(du_ptr + out_row + tg[None, :] * s_ol, du, mask=m2)
        tl.store(ddelta_ptr + out_row + tg[None, :] * s_ol, ddt, mask=m2)
    if HAS_D:
        tl.store(dD_ptr + chan, dD_acc, mask=dmask)
    if HAS_BIAS:
        tl.store(dbias_ptr + chan, dbias_acc, mask=dmask)
