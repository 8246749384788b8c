"""Our Triton selective scan (Mamba-1), forward and backward, deterministic. Design notes: README.md beside this.

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t ;  y_t = <C_t, h_t> + D u_t ;  y_t *= silu(z_t)

One program per (batch, block of channels) walks the sequence in chunks of T steps with the state (N x channels)
in fp32 registers; inside a chunk the recurrence is an associative scan over time, which stays inside each thread.
The forward saves the state every `chunk` steps ([batch, dim, n_states, N] fp32); the backward walks chunks of
`chunk` steps in reverse, recomputes their states from that, and reverse-scans the state gradient. dB, dC (sums over
channels) are written as per-block partials and reduced by torch in a fixed order: no atomics, bitwise repeatable.
Order in this file: tile helpers -> kernels -> launchers -> torch.library custom ops (+ autograd) -> public function.
"""
import os

import torch
import triton
import triton.language as tl

# Tile shapes (README "Tiles"). chunk: steps between saved states = the backward's steps per tile.
# fwd_t: the forward's steps per tile (divides chunk). *_n_lanes: lanes of a warp along the states (the other
# 32 / n_lanes along channels); *_d_per_thread: channels each thread holds; *_warps: warps, all along channels.
# Channels per program = d_per_thread * warps * 32 / n_lanes. *_stages: Triton's software pipelining depth.
# Defaults: the fastest of the H100 sweep (bench/results/scan_h100_notes.md), forward and backward timed apart.
CONFIG = dict(chunk=8, fwd_t=4, fwd_n_lanes=2, fwd_d_per_thread=1, fwd_warps=2, fwd_stages=1,
              bwd_n_lanes=4, bwd_d_per_thread=1, bwd_warps=2, bwd_stages=1)
_KEYS = tuple(CONFIG)
LOG2E = tl.constexpr(1.4426950408889634)

# ----------------------------------------------------------------------------------------------------------------
# Tiles are 6-D: [T, D2, N2, W, N1, D1] with state n = n1 * N2 + n2 and channel d = d1 * W * D2 + w * D2 + d2.
# The axis order steers Triton's layouts: a load whose addresses run along time (axis 0) gets T steps per thread,
# then lanes on the next axes in order (D2: 32 / N2 lanes, N2: N2 lanes), then warps (W); N1 and D1 stay inside
# each thread. Per-step and B/C loads are shaped like the whole tile (see _replicas), so everything computed from
# them keeps that layout. Scans over time are then in-thread loops; a sum over states is N1 in-thread adds plus
# log2(N2) shuffle rounds, a sum over channels D1 adds plus log2(D2) rounds plus one exchange between warps.
# Per-step tiles (u, delta, y, ...) are [T, D2, 1, W, 1, D1], B and C [T, 1, N2, 1, N1, 1], per-channel state
# tiles (h, A, LTI B/C) [1, D2, N2, W, N1, D1].
AX_T, AX_D2, AX_N2, AX_W, AX_N1, AX_D1 = (tl.constexpr(i) for i in range(6))


@triton.jit
def _ax(n: tl.constexpr, axis: tl.constexpr):
    """arange(0, n) along `axis` of a 6-D tile (size 1 on the other axes)"""
    x = tl.arange(0, n)
    if axis == 0:
        return x[:, None, None, None, None, None]
    elif axis == 1:
        return x[None, :, None, None, None, None]
    elif axis == 2:
        return x[None, None, :, None, None, None]
    elif axis == 3:
        return x[None, None, None, :, None, None]
    elif axis == 4:
        return x[None, None, None, None, :, None]
    else:
        return x[None, None, None, None, None, :]


@triton.jit
def _sum_n(x):
    """sum over the states: -> [T, D2, 1, W, 1, D1] (in-thread N1 first, then the N2 lanes)"""
    return tl.sum(tl.sum(x, AX_N1, keep_dims=True), AX_N2, keep_dims=True)


@triton.jit
def _sum_d(x):
    """sum over the channels: -> [T, 1, N2, 1, N1, 1] (in-thread D1, then the D2 lanes, then the warps)"""
    return tl.sum(tl.sum(tl.sum(x, AX_D1, keep_dims=True), AX_D2, keep_dims=True), AX_W, keep_dims=True)


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
    """delta tile in fp32 after bias and softplus, 0 where masked (so exp(0 * A) = 1 there), and the pre-softplus
    value."""
    raw = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _channels(N: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, D1: tl.constexpr, W: tl.constexpr,
              D2: tl.constexpr, dim):
    """state ids [1, 1, N2, 1, N1, 1], channel ids [1, D2, 1, W, 1, D1] of this program, and their masks"""
    nn = _ax(N1, AX_N1) * N2 + _ax(N2, AX_N2)
    dd = tl.program_id(1) * (D1 * W * D2) + _ax(D1, AX_D1) * (W * D2) + _ax(W, AX_W) * D2 + _ax(D2, AX_D2)
    return nn, dd, nn < N, dd < dim


@triton.jit
def _replicas(N2: tl.constexpr, W: tl.constexpr, D2: tl.constexpr):
    """zeros [1, 1, N2, 1, 1, 1] and [1, D2, 1, W, 1, 1], and the mask of the first of the N2 replicas. The zeros,
    added to per-step and to B/C pointers, give those loads the whole tile's lanes and warps (each lane loads its
    own copy: one address, one transaction), so the loaded tiles need no layout conversion and set the layout of
    what is computed from them. Per-step results are then N2 copies too; only the first is stored."""
    n2 = _ax(N2, AX_N2)
    return n2 * 0, _ax(W, AX_W) * 0 + _ax(D2, AX_D2) * 0, n2 == 0


@triton.jit(do_not_specialize=["n_one"])
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
                y_ptr, last_ptr, states_ptr,
                L, dim, n_chunks, n_states, n_one,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, D1: tl.constexpr, W: tl.constexpr,
                D2: tl.constexpr, T: tl.constexpr, RATIO: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE: tl.constexpr,
                FAST_EXP: tl.constexpr):
    """RATIO: tiles of T steps between saved states (states every RATIO * T steps). n_one = 1, not specialised:
    the state buffers' step along N, so that their accesses keep the tile's layout (a known unit stride would
    make them vectorise along N)."""
    pid_b = tl.program_id(0).to(tl.int64)
    nn, dd, nmask, dmask = _channels(N, N1, N2, D1, W, D2, dim)
    dd64 = dd.to(tl.int64)
    tt = _ax(T, AX_T)
    s_mask = nmask & dmask  # [1, D2, N2, W, N1, D1]
    # padded states get A = 0 and B = C = 0: they stay 0 and add nothing
    A2 = tl.load(A_ptr + dd64 * s_a0 + nn * s_a1, mask=s_mask, other=0.0).to(tl.float32) * LOG2E
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    if not B_SEL:  # LTI: B [dim, N]
        B3 = tl.load(B_ptr + dd64 * s_b0 + nn * s_b1, mask=s_mask, other=0.0).to(tl.float32)
    if not C_SEL:
        C3 = tl.load(C_ptr + dd64 * s_c0 + nn * s_c1, mask=s_mask, other=0.0).to(tl.float32)
    s_off = (pid_b * dim + dd64) * N + nn * n_one  # into [batch, dim, N] fp32 buffers
    if HAS_H0:
        h = tl.load(h0_ptr + s_off, mask=s_mask, other=0.0)
    else:
        h = tl.zeros(s_mask.shape, dtype=tl.float32)
    rep_n, rep_d, lead = _replicas(N2, W, D2)
    u_base = u_ptr + pid_b * s_ub + dd64 * s_ud + rep_n  # [1, D2, N2, W, 1, D1] pointers
    t_base = delta_ptr + pid_b * s_tb + dd64 * s_td + rep_n
    z_base = z_ptr + pid_b * s_zb + dd64 * s_zd + rep_n
    b_base = B_ptr + pid_b * s_bb + nn * s_b0 + rep_d  # [1, D2, N2, W, N1, 1]
    c_base = C_ptr + pid_b * s_cb + nn * s_c0 + rep_d
    y_base = y_ptr + (pid_b * dim + dd64) * L + rep_n
    st_base = states_ptr + (pid_b * dim + dd64) * n_states * N + nn * n_one
    first = tt == 0
    for c in range(n_chunks):
        if SAVE:  # noqa: SIM102 - a compile-time branch around a run-time one; the state entering every RATIO-th tile
            if c % RATIO == 0:
                tl.store(st_base + (c // RATIO) * N, h, mask=s_mask)
        tg = (c * T + tt).to(tl.int64)  # [T, 1, 1, 1, 1, 1] global time index
        tmask = tg < L
        m2 = tmask & dmask  # [T, D2, 1, W, 1, D1]
        tn_mask = tmask & nmask  # [T, 1, N2, 1, N1, 1]
        dt, _ = _load_delta(t_base + tg * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_base + tg * s_ul, mask=m2, other=0.0).to(tl.float32)
        if B_SEL:
            B3 = tl.load(b_base + tg * s_b1, mask=tn_mask, other=0.0).to(tl.float32)
        a = _exp2(dt * A2, FAST_EXP)  # [T, D2, N2, W, N1, D1]
        b = (dt * u) * B3
        b = tl.where(first, b + a * h, b)  # the carry enters at the tile's first step
        _, hs = tl.associative_scan((a, b), 0, _fwd_combine)  # states h_t of the tile
        if C_SEL:
            C3 = tl.load(c_base + tg * s_c1, mask=tn_mask, other=0.0).to(tl.float32)
        y = _sum_n(hs * C3)  # [T, D2, 1, W, 1, D1]
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            zz = tl.load(z_base + tg * s_zl, mask=m2, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(y_base + tg, y, mask=m2 & lead)
        # padded steps (t >= L) have a = 1, b = 0, so the last row is the state at min(tile end, L) - 1
        h = tl.sum(tl.where(tt == T - 1, hs, 0.0), 0, keep_dims=True)
    tl.store(last_ptr + s_off, h, mask=s_mask)


@triton.jit(do_not_specialize=["n_one"])
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                L, dim, n_chunks, n_one,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, D1: tl.constexpr, W: tl.constexpr,
                D2: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    nn, dd, nmask, dmask = _channels(N, N1, N2, D1, W, D2, dim)
    dd64 = dd.to(tl.int64)
    tt = _ax(T, AX_T)
    s_mask = nmask & dmask
    A = tl.load(A_ptr + dd64 * s_a0 + nn * s_a1, mask=s_mask, other=0.0).to(tl.float32)
    A2 = A * LOG2E
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    if not B_SEL:
        B3 = tl.load(B_ptr + dd64 * s_b0 + nn * s_b1, mask=s_mask, other=0.0).to(tl.float32)
    if not C_SEL:
        C3 = tl.load(C_ptr + dd64 * s_c0 + nn * s_c1, mask=s_mask, other=0.0).to(tl.float32)
    s_off = (pid_b * dim + dd64) * N + nn * n_one  # into [batch, dim, N] fp32 buffers (n_one: see _fwd_kernel)
    if HAS_DLAST:  # gradient of the state at the end of the current chunk, flowing in from later steps
        carry = tl.load(dlast_ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros(s_mask.shape, dtype=tl.float32)
    dA_acc = tl.zeros(s_mask.shape, dtype=tl.float32)
    dB_acc = tl.zeros(s_mask.shape, dtype=tl.float32)  # LTI only
    dC_acc = tl.zeros(s_mask.shape, dtype=tl.float32)  # LTI only
    rep_n, rep_d, lead = _replicas(N2, W, D2)
    dmask_r = dmask & lead  # [1, D2, N2, W, 1, D1]: per-channel values, first replica
    dD_acc = tl.zeros(dmask_r.shape, dtype=tl.float32)
    dbias_acc = tl.zeros(dmask_r.shape, dtype=tl.float32)
    row = (pid_b * dim + dd64) * L + rep_n  # rows of the contiguous [batch, dim, L] gradients
    u_base = u_ptr + pid_b * s_ub + dd64 * s_ud + rep_n  # [1, D2, N2, W, 1, D1]
    t_base = delta_ptr + pid_b * s_tb + dd64 * s_td + rep_n
    z_base = z_ptr + pid_b * s_zb + dd64 * s_zd + rep_n
    g_base = dy_ptr + pid_b * s_gb + dd64 * s_gd + rep_n
    b_base = B_ptr + pid_b * s_bb + nn * s_b0 + rep_d  # [1, D2, N2, W, N1, 1]
    c_base = C_ptr + pid_b * s_cb + nn * s_c0 + rep_d
    st_base = states_ptr + (pid_b * dim + dd64) * n_chunks * N + nn * n_one
    part = ((pid_b * tl.num_programs(1) + tl.program_id(1)) * N + nn) * L  # rows of the dB/dC partials
    first = tt == 0
    last = tt == T - 1
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        tg = (c * T + tt).to(tl.int64)
        tmask = tg < L
        m2 = tmask & dmask  # [T, D2, 1, W, 1, D1]
        tn_mask = tmask & nmask  # [T, 1, N2, 1, N1, 1]
        dt, raw = _load_delta(t_base + tg * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_base + tg * s_ul, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(g_base + tg * s_gl, mask=m2, other=0.0).to(tl.float32)
        if B_SEL:
            B3 = tl.load(b_base + tg * s_b1, mask=tn_mask, other=0.0).to(tl.float32)
        if C_SEL:
            C3 = tl.load(c_base + tg * s_c1, mask=tn_mask, other=0.0).to(tl.float32)
        # recompute the chunk's states from the saved state entering it
        h0 = tl.load(st_base + c * N + tt * 0, mask=s_mask, other=0.0)  # [T, ...]: the tile's layout, see _replicas
        dtu = dt * u
        a = _exp2(dt * A2, FAST_EXP)
        b = dtu * B3
        _, hs = tl.associative_scan((a, tl.where(first, b + a * h0, b)), 0, _fwd_combine)
        # output gate and skip
        if HAS_Z:
            zz = tl.load(z_base + tg * s_zl, mask=m2, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            y = _sum_n(hs * C3)
            if HAS_D:
                y += Dv * u
            tl.store(dz_ptr + row + tg, dout * y * sg * (1.0 + zz * (1.0 - sg)), mask=m2 & lead)
            dy = dout * zz * sg
        else:
            dy = dout
        if HAS_D:
            dD_acc += tl.sum(dy * u, 0, keep_dims=True)
        if C_SEL:  # dC = sum over channels of dy_t h_t
            tl.store(dCp_ptr + part + tg, _sum_d(dy * hs), mask=tn_mask)
        else:
            dC_acc += tl.sum(dy * hs, 0, keep_dims=True)
        # state gradient g_t = C_t dy_t + a_{t+1} g_{t+1}; the carry enters at the chunk's last step. (Triton lowers
        # reverse=True with two lane-reversing shuffles per value and operand, ~14 SHFL per element here; a forward
        # scan over tl.flip'ped tiles avoided them but gave wrong gradients on the H100, see the notes.)
        cg = dy * C3
        cg = tl.where(last, cg + carry, cg)
        ones = tl.full(a.shape, 1.0, tl.float32)
        _, _, gs = tl.associative_scan((a, ones, cg), 0, _bwd_combine, reverse=True)
        # the first row by a masked sum: a reduce with a non-commutative combine (pick the first) is not safe
        carry = tl.sum(tl.where(first, a * gs, 0.0), 0, keep_dims=True)
        gah = gs * (hs - b)  # g_t a_t h_{t-1}
        dA_acc += tl.sum(gah * dt, 0, keep_dims=True)
        gB = _sum_n(gs * B3)  # [T, D2, 1, W, 1, D1]
        ddt = gB * u + _sum_n(gah * A)
        du = gB * dt
        if HAS_D:
            du += dy * Dv
        if B_SEL:
            tl.store(dBp_ptr + part + tg, _sum_d(gs * dtu), mask=tn_mask)
        else:
            dB_acc += tl.sum(gs * dtu, 0, keep_dims=True)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)  # padded steps have a nonzero g (A) term; keep it out of dbias
        dbias_acc += tl.sum(ddt, 0, keep_dims=True)
        tl.store(du_ptr + row + tg, du, mask=m2 & lead)
        tl.store(ddelta_ptr + row + tg, ddt, mask=m2 & lead)
    tl.store(dh0_ptr + s_off, carry, mask=s_mask)
    tl.store(dA_ptr + s_off, dA_acc, mask=s_mask)
    if not B_SEL:
        tl.store(dBp_ptr + s_off, dB_acc, mask=s_mask)
    if not C_SEL:
        tl.store(dCp_ptr + s_off, dC_acc, mask=s_mask)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + dd64 + rep_n, dD_acc, mask=dmask_r)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + dd64 + rep_n, dbias_acc, mask=dmask_r)


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


def _tile(N: int, n_lanes: int, d_per_thread: int, warps: int) -> dict:
    """The 6-D tile's axis sizes (N1, N2, D1, W, D2) for N states; channels per program = D1 * W * D2."""
    N_P = triton.next_power_of_2(N)
    N2 = min(n_lanes, N_P)
    return dict(N1=N_P // N2, N2=N2, D1=d_per_thread, W=warps, D2=32 // N2)


def _block_d(t: dict) -> int:
    return t["D1"] * t["W"] * t["D2"]


def _f32_bc(X: torch.Tensor) -> torch.Tensor:
    # a selective B/C in fp32: a copy 1/dim the size of u, so the kernels skip a bf16/fp16 unpack per value that each
    # thread would otherwise repeat for its copy of the [T, N] tile
    return X.float() if X.dim() == 3 and X.dtype != torch.float32 else X


def _fast_exp(x: torch.Tensor) -> bool:
    # inline PTX only where the kernels are compiled for an NVIDIA GPU (not in the interpreter)
    return x.is_cuda and torch.version.hip is None and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, cfg):
    """Launch the forward (cfg: CONFIG's values in its key order). Returns y [batch, dim, L] (u's dtype), last state
    [batch, dim, N] fp32 and the states entering every `chunk` steps [batch, dim, n_states, N] fp32 (empty unless
    save_states)."""
    c = dict(zip(_KEYS, cfg))
    batch, dim, L = u.shape
    N = A.shape[1]
    T = min(c["fwd_t"], c["chunk"])
    n_states = triton.cdiv(L, c["chunk"])
    y = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
    last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)
    states = torch.empty(batch, dim, n_states if save_states else 0, N, device=u.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    zz = z if z is not None else u  # dummy pointer when absent (never read)
    t = _tile(N, c["fwd_n_lanes"], c["fwd_d_per_thread"], c["fwd_warps"])
    grid = (batch, triton.cdiv(dim, _block_d(t)))
    B, C = _f32_bc(B), _f32_bc(C)
    _fwd_kernel[grid](
        u, delta, A, B, C, D, zz, delta_bias, h0, y, last, states, L, dim, triton.cdiv(L, T), n_states, 1,
        *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        N=N, **t, T=T, RATIO=c["chunk"] // T, B_SEL=B.dim() == 3, C_SEL=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=delta_softplus, SAVE=save_states, FAST_EXP=_fast_exp(u), num_warps=t["W"],
        num_stages=c["fwd_stages"])
    return y, last, states


def _bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, cfg):
    """Launch the backward and reduce the partials in a fixed order. Returns the gradients of
    (u, delta, A, B, C, D, z, delta_bias, initial_state), each in its input's dtype; D, z, delta_bias get an
    empty tensor when absent. The initial-state gradient is fp32 [batch, dim, N]."""
    c = dict(zip(_KEYS, cfg))
    batch, dim, L = u.shape
    N = A.shape[1]
    T = c["chunk"]
    n_chunks = triton.cdiv(L, T)
    assert states.shape == (batch, dim, n_chunks, N), "saved chunk states do not match the chunk size"
    t = _tile(N, c["bwd_n_lanes"], c["bwd_d_per_thread"], c["bwd_warps"])
    n_blk = triton.cdiv(dim, _block_d(t))
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
    ddelta = torch.empty(batch, dim, L, device=u.device, dtype=delta.dtype)
    dz = torch.empty(batch, dim, L, device=u.device, dtype=z.dtype) if z is not None else u.new_empty(0)
    dA = torch.empty(batch, dim, N, **f32)  # per-batch partials
    dBp = torch.empty(batch, n_blk, N, L, **f32) if B.dim() == 3 else torch.empty(batch, dim, N, **f32)
    dCp = torch.empty(batch, n_blk, N, L, **f32) if C.dim() == 3 else torch.empty(batch, dim, N, **f32)
    dD = torch.empty(batch, dim, **f32) if D is not None else None
    dbias = torch.empty(batch, dim, **f32) if delta_bias is not None else None
    dh0 = torch.empty(batch, dim, N, **f32)
    zz = z if z is not None else u
    B_dtype, C_dtype = B.dtype, C.dtype
    B, C = _f32_bc(B), _f32_bc(C)
    _bwd_kernel[(batch, n_blk)](
        u, delta, A, B, C, D, zz, delta_bias, states, dy, dlast,
        du, ddelta, dz if z is not None else du, dA, dBp, dCp, dD, dbias, dh0, L, dim, n_chunks, 1,
        *u.stride(), *delta.stride(), *zz.stride(), *dy.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        N=N, **t, T=T, B_SEL=B.dim() == 3, C_SEL=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_DLAST=dlast is not None,
        SOFTPLUS=delta_softplus, FAST_EXP=_fast_exp(u), num_warps=t["W"], num_stages=c["bwd_stages"])
    # fixed-order reductions of the partials (deterministic)
    dB = dBp.sum(1) if B.dim() == 3 else dBp.sum(0)  # [batch, N, L] or [dim, N]
    dC = dCp.sum(1) if C.dim() == 3 else dCp.sum(0)
    return (du, ddelta, dA.sum(0).to(A.dtype), dB.to(B_dtype), dC.to(C_dtype),
            dD.sum(0).to(D.dtype) if D is not None else u.new_empty(0), dz,
            dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else u.new_empty(0), dh0)


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
    return (u.new_empty(batch, dim, L), u.new_empty(batch, dim, N, dtype=torch.float32),
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
    return [torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), torch.empty_like(D) if D is not None else u.new_empty(0),
            torch.empty_like(z) if z is not None else u.new_empty(0),
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
        if k.endswith("_stages"):
            if not 1 <= v <= 4:
                raise ValueError(f"selective_scan_triton: {k}={v}; allowed: 1 to 4")
        elif v < 1 or v & (v - 1):
            raise ValueError(f"selective_scan_triton: {'chunk_size' if k == 'chunk' else k}={v}; "
                             f"allowed: a power of two")
    for k in ("fwd_n_lanes", "bwd_n_lanes"):
        if c[k] > 32:
            raise ValueError(f"selective_scan_triton: {k}={c[k]}; allowed: at most 32 (the lanes of a warp)")
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
        chunk_size: steps between saved states (a power of two; CONFIG["chunk"] when None).
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
