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


def _chan_sum_asm(store: str) -> str:
    """PTX for _chan_sum_store: the thread's 8 values x ($8..$15, consecutive steps of one channel) summed over the 8
    channels on lane bits 2..4 by halving exchanges (4 + 2 + 1 shuffles: each lane ends with the sum for one of its
    steps, the step whose index in the thread equals its channel lane), stored at $16 with `store` (w: the f32 sum)."""
    return ("{\n.reg .b32 ln, bt;\n.reg .pred q4, q3, q2;\n.reg .f32 k<4>, s<4>, r<4>, u<2>, t<2>, v, w;\n"
            ".reg .b16 hw;\nmov.u32 ln, %laneid;\n"
            "and.b32 bt, ln, 16; setp.ne.u32 q4, bt, 0;\nand.b32 bt, ln, 8; setp.ne.u32 q3, bt, 0;\n"
            "and.b32 bt, ln, 4; setp.ne.u32 q2, bt, 0;\n"
            + "".join(f"selp.f32 s{i}, ${8 + i}, ${12 + i}, q4; selp.f32 k{i}, ${12 + i}, ${8 + i}, q4;\n"
                      f"shfl.sync.bfly.b32 r{i}, s{i}, 16, 31, -1; add.f32 k{i}, k{i}, r{i};\n" for i in range(4))
            + "".join(f"selp.f32 t{j}, k{j}, k{j + 2}, q3; selp.f32 u{j}, k{j + 2}, k{j}, q3;\n"
                      f"shfl.sync.bfly.b32 r{j}, t{j}, 8, 31, -1; add.f32 u{j}, u{j}, r{j};\n" for j in range(2))
            + "selp.f32 v, u0, u1, q2; selp.f32 w, u1, u0, q2;\n"
            "shfl.sync.bfly.b32 r0, v, 4, 31, -1; add.f32 w, w, r0;\n"
            + store + "\n" + " ".join(f"mov.u32 ${i}, 0;" for i in range(8)) + "\n}")


_ASM_F32 = tl.constexpr(_chan_sum_asm("st.global.f32 [$16], w;"))
_ASM_BF16 = tl.constexpr(_chan_sum_asm("cvt.rn.bf16.f32 hw, w; st.global.b16 [$16], hw;"))
_ASM_F16 = tl.constexpr(_chan_sum_asm("cvt.rn.f16.f32 hw, w; st.global.b16 [$16], hw;"))
_ASM_ARGS = tl.constexpr(",".join(["=r"] * 8 + ["r"] * 8 + ["l"] * 8))


@triton.jit
def _chan_sum_store(row, x, T: tl.constexpr):
    """row[t] = sum over the block's 8 channels of x [8, T] for the tile's T steps (row: the tile's first step), for
    the layout a [8, 32] tile of 16-bit loads gets with one warp: 8 consecutive steps a thread, 4 lanes along the
    steps, 8 along the channels (lane = 4 channel + step lane). One coalesced store of 32 steps, no layout conversion;
    the launcher enables it only where that layout holds (bwd_asm=1; checked against the fp32 reference on the GPU)."""
    tt = tl.arange(0, T)
    cl = tl.arange(0, 8)
    addr = (row + (tt // 8 * 8)[None, :] + cl[:, None]).to(tl.int64)  # the step this lane keeps
    if row.dtype.element_ty == tl.float32:
        tl.inline_asm_elementwise(_ASM_F32, _ASM_ARGS, [x, addr], dtype=tl.int32, is_pure=False, pack=8)
    elif row.dtype.element_ty == tl.bfloat16:
        tl.inline_asm_elementwise(_ASM_BF16, _ASM_ARGS, [x, addr], dtype=tl.int32, is_pure=False, pack=8)
    else:
        tl.inline_asm_elementwise(_ASM_F16, _ASM_ARGS, [x, addr], dtype=tl.int32, is_pure=False, pack=8)


def _rev_scan_asm() -> str:
    """PTX for _rev_scan: g_t = cg_t + a_{t+1} g_{t+1} over the tile (0 past its end), a in $8..$15, cg in $16..$23,
    g out in $0..$7, for 8 consecutive steps a thread and 4 step lanes (lane bits 0..1). In the thread: the local
    suffix G_i (no input from later lanes) and the products P_i = a_{i+1}..a_7; across the 4 lanes: the maps
    K -> a_0 G_0 + (a_0..a_7) K composed from the last lane down (shuffles down by 1, 2 within 4 lanes), then
    K of the next lane in: g_i = G_i + P_i K. Five shuffles, where Triton's reverse scan moves every operand
    across the lanes and back. The composed map of step lane 0 is the tile's carry out, a_0 g_0: that lane stores it
    at $24 (the running state gradient, so no sum over the steps and no layout conversion is needed for it)."""
    cw = "0x1c1f"  # shfl.down within segments of 4 lanes
    lines = ["{", ".reg .f32 G<8>, P<8>, al, be, al2, be2, X;", ".reg .pred ok, first;", ".reg .b32 sl;",
             "mov.f32 G7, $23;"]
    lines += [f"fma.rn.f32 G{i}, ${9 + i}, G{i + 1}, ${16 + i};" for i in range(6, -1, -1)]
    lines += ["mov.f32 P7, 0f3F800000;", "mov.f32 P6, $15;"]
    lines += [f"mul.f32 P{i}, P{i + 1}, ${9 + i};" for i in range(5, -1, -1)]
    lines += ["mul.f32 al, P0, $8;", "mul.f32 be, G0, $8;"]
    for d in (1, 2):
        lines += [f"shfl.sync.down.b32 al2|ok, al, {d}, {cw}, -1;", f"shfl.sync.down.b32 be2, be, {d}, {cw}, -1;",
                  "@ok fma.rn.f32 be, al, be2, be;", "@ok mul.f32 al, al, al2;"]
    lines += ["mov.u32 sl, %laneid;", "and.b32 sl, sl, 3;", "setp.eq.u32 first, sl, 0;",
              "@first st.global.f32 [$24], be;"]
    lines += [f"shfl.sync.down.b32 X|ok, be, 1, {cw}, -1;", "@!ok mov.f32 X, 0f00000000;"]
    lines += [f"fma.rn.f32 ${i}, P{i}, X, G{i};" for i in range(8)]
    return "\n".join(lines + ["}"])


_ASM_REV = tl.constexpr(_rev_scan_asm())
_ASM_REV_ARGS = tl.constexpr(",".join(["=r"] * 8 + ["r"] * 16 + ["l"] * 8))


@triton.jit
def _rev_scan(a, cg, carry_ptr):
    """g [8, T] with g_t = cg_t + a_{t+1} g_{t+1} (0 past the tile), by inline PTX for the [8, 32] tile's layout of
    _chan_sum_store (enabled where it holds, as that one); stores the carry a_0 g_0 of each channel at carry_ptr [8]
    (every channel of the block valid: the launcher requires dim % 8 == 0)."""
    addr = tl.broadcast_to(carry_ptr[:, None], a.shape).to(tl.int64)
    return tl.inline_asm_elementwise(_ASM_REV, _ASM_REV_ARGS, [a, cg, addr], dtype=tl.float32, is_pure=False, pack=8)


def _fwd_scan_asm() -> str:
    """PTX for _fwd_scan: h_t = a_t h_{t-1} + b_t over the tile from h_in (the state entering it), a in $8..$15,
    b in $16..$23, h_in in $24 (the channel's, the same in all 8), h out in $0..$7, for _rev_scan's layout. In the
    thread: the local prefix H_i (zero input) and the products P_i = a_0..a_i; across the 4 step lanes the maps
    x -> P_7 x + H_7 composed from lane 0 up (shuffles up by 1, 2 within 4 lanes), then the state at the previous
    lane's end in: h_i = H_i + P_i x (x = h_in on step lane 0). Five shuffles, and h_in needs no select."""
    cw = "0x1c00"  # shfl.up within segments of 4 lanes
    lines = ["{", ".reg .f32 H<8>, P<8>, al, be, al2, be2, Y, X;", ".reg .pred ok;", "mov.f32 H0, $16;",
             "mov.f32 P0, $8;"]
    lines += [f"fma.rn.f32 H{i}, ${8 + i}, H{i - 1}, ${16 + i};" for i in range(1, 8)]
    lines += [f"mul.f32 P{i}, P{i - 1}, ${8 + i};" for i in range(1, 8)]
    lines += ["mov.f32 al, P7;", "mov.f32 be, H7;"]
    for d in (1, 2):
        lines += [f"shfl.sync.up.b32 al2|ok, al, {d}, {cw}, -1;", f"shfl.sync.up.b32 be2, be, {d}, {cw}, -1;",
                  "@ok fma.rn.f32 be, al, be2, be;", "@ok mul.f32 al, al, al2;"]
    lines += ["fma.rn.f32 Y, al, $24, be;", f"shfl.sync.up.b32 X|ok, Y, 1, {cw}, -1;", "@!ok mov.f32 X, $24;"]
    lines += [f"fma.rn.f32 ${i}, P{i}, X, H{i};" for i in range(8)]
    return "\n".join(lines + ["}"])


_ASM_FWD = tl.constexpr(_fwd_scan_asm())
_ASM_FWD_ARGS = tl.constexpr(",".join(["=r"] * 8 + ["r"] * 24))


@triton.jit
def _fwd_scan(a, b, h_in):
    """h [8, T] with h_t = a_t h_{t-1} + b_t from h_in [8] (the states entering the tile), by inline PTX for the
    [8, 32] tile's layout of _chan_sum_store (enabled where it holds, as that one)."""
    h0 = tl.broadcast_to(h_in[:, None], a.shape)
    return tl.inline_asm_elementwise(_ASM_FWD, _ASM_FWD_ARGS, [a, b, h0], dtype=tl.float32, is_pure=True, pack=8)


@triton.jit
def _state_loads(A_ptr, B_ptr, C_ptr, b_row, c_row, h_tile, carry, dA_row, n, dd64, s_a0, s_a1, s_b0, s_b1, s_c0, s_c1,
                 tg, rep, mt, dmask, B_SEL: tl.constexpr, C_SEL: tl.constexpr):
    """State n's values for one tile: A [BD], B and C rows ([BD, T] selective, [BD, 1] LTI), the state entering the
    tile, the state gradient entering from later steps and the dA sum so far ([BD] each)."""
    A = tl.load(A_ptr + dd64 * s_a0 + n * s_a1, mask=dmask, other=0.0).to(tl.float32)
    Bn = _state_row(B_ptr, b_row, n, dd64, s_b0, s_b1, tg, rep, mt, dmask, B_SEL)
    Cn = _state_row(C_ptr, c_row, n, dd64, s_c0, s_c1, tg, rep, mt, dmask, C_SEL)
    h_in = tl.load(h_tile + n, mask=dmask, other=0.0)
    g_in = tl.load(carry + n, mask=dmask, other=0.0)
    dA_n = tl.load(dA_row + n, mask=dmask, other=0.0)
    return A, Bn, Cn, h_in, g_in, dA_n


@triton.jit(do_not_specialize=["n_tiles", "c_start", "c_count"])  # as _bwd_kernel: one compilation for every L
def _bwd_rolled_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                       du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                       L, dim, n_tiles, c_start, c_count, p_len,
                       s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_ob, s_od, s_ol,
                       s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                       N: tl.constexpr, WS: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                       B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                       HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr,
                       FAST_EXP: tl.constexpr, HALF_PARTIALS: tl.constexpr, UNROLL: tl.constexpr,
                       PREFETCH: tl.constexpr, ASM_SUM: tl.constexpr, ASM_SCAN: tl.constexpr,
                       ASM_FWD: tl.constexpr):
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
        if PREFETCH:  # state 0's loads; each state then issues the next one's before its scans (latency hidden)
            A, Bn, Cn, h_in, g_in, dA_n = _state_loads(A_ptr, B_ptr, C_ptr, b_row, c_row, h_tile, carry, dA_row, 0,
                                                       dd64, s_a0, s_a1, s_b0, s_b1, s_c0, s_c1, tg, rep, mt, dmask,
                                                       B_SEL, C_SEL)
        for n in tl.range(0, N, loop_unroll_factor=UNROLL):
            if PREFETCH:
                more = n + 1 < N
                A1, B1, C1, h1, g1, dA1 = _state_loads(A_ptr, B_ptr, C_ptr, b_row, c_row, h_tile, carry, dA_row,
                                                       n + 1, dd64, s_a0, s_a1, s_b0, s_b1, s_c0, s_c1, tg, rep,
                                                       mt & more, dmask & more, B_SEL, C_SEL)
            else:
                A, Bn, Cn, h_in, g_in, dA_n = _state_loads(A_ptr, B_ptr, C_ptr, b_row, c_row, h_tile, carry, dA_row,
                                                           n, dd64, s_a0, s_a1, s_b0, s_b1, s_c0, s_c1, tg, rep, mt,
                                                           dmask, B_SEL, C_SEL)
            a = _exp2(dt * (A * LOG2E)[:, None], FAST_EXP)
            b = dtu * Bn
            if ASM_FWD:
                h = _fwd_scan(a, b, h_in)
            else:
                _, h = tl.associative_scan((a, tl.where(first, b + a * h_in[:, None], b)), 1, _fwd_combine)
            if HAS_Z:
                y += h * Cn
            cg = dy * Cn
            cg = tl.where(last, cg + g_in[:, None], cg)
            if ASM_SCAN:  # also stores the carry
                g = _rev_scan(a, cg, carry + n)
            else:
                _, _, g = tl.associative_scan((a, ones, cg), 1, _bwd_combine, reverse=True)
                tl.store(carry + n, tl.sum(tl.where(first, a * g, 0.0), 1), mask=dmask)
            gah = g * (h - b)  # g_t a_t h_{t-1}
            tl.store(dA_row + n, dA_n + tl.sum(gah * dt, 1), mask=dmask)
            S += g * Bn
            Q += gah * A[:, None]
            if B_SEL and ASM_SUM:
                _chan_sum_store(dBp_ptr + part + n * p_len + (c * T - p0), g * dtu, T)
            elif B_SEL:
                _store_partial(dBp_ptr + part + n * p_len, tg - p0, g * dtu, tmask, mt, rep, dd64, BD, T,
                               HALF_PARTIALS)
            else:
                dB_n = tl.load(dBp_ptr + chan * N + n, mask=dmask, other=0.0)
                tl.store(dBp_ptr + chan * N + n, dB_n + tl.sum(g * dtu, 1), mask=dmask)
            if C_SEL and ASM_SUM:
                _chan_sum_store(dCp_ptr + part + n * p_len + (c * T - p0), dy * h, T)
            elif C_SEL:
                _store_partial(dCp_ptr + part + n * p_len, tg - p0, dy * h, tmask, mt, rep, dd64, BD, T,
                               HALF_PARTIALS)
            else:
                dC_n = tl.load(dCp_ptr + chan * N + n, mask=dmask, other=0.0)
                tl.store(dCp_ptr + chan * N + n, dC_n + tl.sum(dy * h, 1), mask=dmask)
            if PREFETCH:
                A, Bn, Cn, h_in, g_in, dA_n = A1, B1, C1, h1, g1, dA1
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
