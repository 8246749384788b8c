"""The Triton kernels of our selective scan (Mamba-1): tile helpers, the forward and backward kernels, the fixed-order
sum of the dB/dC partials, and an exp-throughput kernel for the bench's floor. Launchers, custom ops and the public
function: triton.py beside this (its docstring and README.md describe the design).
"""
import triton
import triton.language as tl

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


@triton.jit
def _store_partial(row, t, x, tmask, mt, rep, dd64, BD: tl.constexpr, T: tl.constexpr, HALF: tl.constexpr):
    """Store the sum over channels of x [BD, T] at row[t] (t: [T] steps of the segment). fp32: a [T] store, whose
    layout the compiler converts through shared memory. HALF (16-bit partials): the sum kept as a [1, T] row and stored
    from the tile's own layout (a [BD, T] store masked to the block's first channel), which needs no conversion: the
    tile holds 8 consecutive steps a thread, the width of one 16-byte vector of 16-bit values."""
    if HALF:
        v = tl.broadcast_to(tl.sum(x, 0, keep_dims=True), (BD, T)).to(row.dtype.element_ty)
        first = dd64[:, None] == tl.min(dd64, 0)
        tl.store(row + t[None, :] + rep, v, mask=mt & first)
    else:
        tl.store(row + t, tl.sum(x, 0), mask=tmask)


# Per-state values carried between tiles (state, state gradient, dA sums) live in [BD, WS] tables, column n for state
# n, WS = max(T, N rounded up): when WS = T a table has the tile's layout, so reading or writing a column needs no
# layout conversion (a [BD, N] table would get its own layout and cost two shared-memory round trips per state).


# n_tiles: as _bwd_kernel below, one compilation for every L. save: 1 stores the states entering every tile (for the
# backward) at tile c of states [batch, dim, n_saved = n_tiles, N]; 0 stores them all at tile 0 of a [batch, dim,
# n_saved = 1, N] buffer (one store per tile either way, no branch: a runtime `if` around it made ptxas spill).
# Runtime values, so a training and a no-grad forward share one compilation.
@triton.jit(do_not_specialize=["n_tiles", "n_saved", "save"])
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
                y_ptr, last_ptr, states_ptr,
                L, dim, n_tiles, n_saved, save,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_yb, s_yd, s_yl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, WS: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP: tl.constexpr):
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
        # the states entering the tile
        tl.store(states_ptr + (chan[:, None] * n_saved + c * save) * N + nn[None, :], h_all, mask=s_mask)
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


# c_start, c_count, n_tiles change with L and the segment; the code needs nothing from their values (tile starts are
# multiples of T), so they are not specialised on: one compilation serves every L and segment
@triton.jit(do_not_specialize=["n_tiles", "c_start", "c_count"])
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                L, dim, n_tiles, c_start, c_count, p_len,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl, s_ob, s_od, s_ol,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, WS: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP: tl.constexpr,
                HALF_PARTIALS: tl.constexpr = False):
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
                _store_partial(dBp_ptr + part + n * p_len, tg - p0, g * dtu, tmask, mt, rep, dd64, BD, T, HALF_PARTIALS)
            else:
                dB_all = _add_column(dB_all, nn, n, tl.sum(g * dtu, 1))
            if C_SEL:  # dC_t = sum over channels of dy_t h_t
                _store_partial(dCp_ptr + part + n * p_len, tg - p0, dy * h, tmask, mt, rep, dd64, BD, T, HALF_PARTIALS)
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
def _sum_one(p_ptr, out_ptr, pid_b, j, mask, n_part, L, s_pb, s_pk, s_pn, s_ob, s_on, s_ol, BLOCK: tl.constexpr,
             KB: tl.constexpr):
    """out[b, n, t] = sum over k of p[b, k, n, t] for the flat indices j = n * L + t of one block (see below)."""
    n, t = j // L, j % L
    src = p_ptr + pid_b * s_pb + n * s_pn + t  # [BLOCK]
    kk = tl.arange(0, KB)
    acc = tl.zeros((KB, BLOCK), dtype=tl.float32)
    for k0 in range(0, n_part, KB):
        m = mask[None, :] & (k0 + kk < n_part)[:, None]
        acc += tl.load(src[None, :] + (k0 + kk)[:, None].to(tl.int64) * s_pk, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid_b * s_ob + n * s_on + t * s_ol, tl.sum(acc, 0).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_partials_kernel(p_ptr, out_ptr, q_ptr, out2_ptr, n_part, L, NL, s_pb, s_pk, s_pn, s_ob, s_on, s_ol,
                         s_qb, s_qk, s_qn, s_o2b, s_o2n, s_o2l, BLOCK: tl.constexpr, KB: tl.constexpr):
    """out[b, n, t] = sum over k of p[b, k, n, t] (p: [batch, n_part, N, >= L] fp32 or 16-bit, steps contiguous; out
    [batch, N, L] in its own dtype and strides), and out2 from q the same way on grid axis 2's second index (dB and
    dC in one launch): the fixed-order reduction of the dB/dC partials, with no fp32 [batch, N, L] copy. KB partials
    are loaded at once (KB x more loads in flight than one at a time, which left each program waiting on memory
    n_part times: ~0.1 ms a launch whatever L), summed elementwise over the loop and by one fixed-shape reduction
    after it: the same order every run."""
    pid_b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = j < NL
    if tl.program_id(2) == 0:
        _sum_one(p_ptr, out_ptr, pid_b, j, mask, n_part, L, s_pb, s_pk, s_pn, s_ob, s_on, s_ol, BLOCK, KB)
    else:
        _sum_one(q_ptr, out2_ptr, pid_b, j, mask, n_part, L, s_qb, s_qk, s_qn, s_o2b, s_o2n, s_o2l, BLOCK, KB)


@triton.jit
def exp_throughput_kernel(x_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """ITERS exponentials per element of x [programs * BLOCK] fp32, in registers: the measured exp rate behind the
    exp floor of hybrid.bench.scan (the same ex2 instruction as the scan kernels)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    for _ in range(ITERS):
        x = _exp2(x * -0.5, True)
    tl.store(x_ptr + offs, x)
