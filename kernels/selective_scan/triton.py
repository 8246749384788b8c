"""Our Triton selective scan (Mamba-1), forward and backward, deterministic. Design notes: README.md beside this.

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t ;  y_t = <C_t, h_t> + D u_t ;  y_t *= silu(z_t)

One program per (batch, block of BLOCK_D channels) walks the sequence in chunks of T steps with the state
[BLOCK_D, N] in fp32 registers. Inside a chunk the recurrence is an associative scan over the time axis of
[BLOCK_D, N, T] tiles; the carry enters afterwards as h_t = H_t + (prod_{s<=t} a_s) h_carry. The forward saves the
state entering every chunk ([batch, dim, n_chunks, N] fp32); the backward walks chunks in reverse, recomputes the
chunk's states from that, and reverse-scans the state gradient. dB, dC (summed over channels) are written as
per-block partials and reduced by torch in a fixed order: no atomics, so two runs are bitwise identical.
Order in this file: kernels -> launchers -> torch.library custom ops (+ autograd, fake impls) -> public function.
"""
import os

import torch
import triton
import triton.language as tl

# Tile shapes (README "Tiles and layouts"); untuned guesses until the GPU tuning (issue 8).
# chunk: time steps per chunk, shared by both kernels (it is the spacing of the saved states);
# block_d: channels per program; tnd: 3-D tile axis order [T, N, BLOCK_D] (else [T, BLOCK_D, N]).
CONFIG = dict(chunk=16, fwd_block_d=32, fwd_num_warps=4, bwd_block_d=32, bwd_num_warps=8, tnd=True)
LOG2E = tl.constexpr(1.4426950408889634)


# Tiles are 3-D with time first: [T, N, BLOCK_D] when TND, else [T, BLOCK_D, N]. Triton's default layout spreads
# lanes over the last axes, so the time axis stays inside each thread and the scans over it are in-thread loops.
# Per-step tiles are [T, BLOCK_D] (u, delta, z, y) and [T, N] (B, C); per-channel tiles (state, A, LTI B/C) are
# [N, BLOCK_D] when TND else [BLOCK_D, N]. These helpers place each in the 3-D tile.

@triton.jit
def _td(x, TND: tl.constexpr):
    """[T, BLOCK_D] -> 3-D"""
    if TND:
        return x[:, None, :]
    else:
        return x[:, :, None]


@triton.jit
def _tn(x, TND: tl.constexpr):
    """[T, N] -> 3-D"""
    if TND:
        return x[:, :, None]
    else:
        return x[:, None, :]


@triton.jit
def _outer(d, n, TND: tl.constexpr):
    """d [BLOCK_D], n [N] -> the per-channel tile d + n ([N, BLOCK_D] or [BLOCK_D, N]); for offsets"""
    if TND:
        return n[:, None] + d[None, :]
    else:
        return d[:, None] + n[None, :]


@triton.jit
def _outer_and(d, n, TND: tl.constexpr):
    if TND:
        return n[:, None] & d[None, :]
    else:
        return d[:, None] & n[None, :]


@triton.jit
def _sum_n(x, TND: tl.constexpr):
    """3-D -> [T, BLOCK_D]"""
    if TND:
        return tl.sum(x, axis=1)
    else:
        return tl.sum(x, axis=2)


@triton.jit
def _sum_d(x, TND: tl.constexpr):
    """3-D -> [T, N]"""
    if TND:
        return tl.sum(x, axis=2)
    else:
        return tl.sum(x, axis=1)


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
    """delta tile [T, BLOCK_D] in fp32 after bias and softplus, 0 where masked (so exp(0 * A) = 1 there), and the
    pre-softplus value."""
    raw = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
                y_ptr, last_ptr, states_ptr,
                L, dim, n_chunks,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr, TND: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE: tl.constexpr,
                FAST_EXP: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D] channel ids
    nn = tl.arange(0, N_P)
    tt = tl.arange(0, T)
    dmask = dd < dim
    nmask = nn < N
    dd64 = dd.to(tl.int64)
    s_mask = _outer_and(dmask, nmask, TND)  # per-channel tiles
    # padded states get A = 0 and B = C = 0: they stay 0 and add nothing
    A2 = tl.load(A_ptr + _outer(dd64 * s_a0, nn * s_a1, TND), mask=s_mask, other=0.0).to(tl.float32) * LOG2E
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    if not B_SEL:  # LTI: B [dim, N]
        B3 = tl.load(B_ptr + _outer(dd64 * s_b0, nn * s_b1, TND), mask=s_mask, other=0.0).to(tl.float32)[None]
    if not C_SEL:
        C3 = tl.load(C_ptr + _outer(dd64 * s_c0, nn * s_c1, TND), mask=s_mask, other=0.0).to(tl.float32)[None]
    s_off = _outer((pid_b * dim + dd64) * N, nn, TND)  # into [batch, dim, N] fp32 buffers
    if HAS_H0:
        h = tl.load(h0_ptr + s_off, mask=s_mask, other=0.0)
    else:
        h = tl.zeros(s_mask.shape, dtype=tl.float32)
    u_base = u_ptr + pid_b * s_ub + dd64[None, :] * s_ud  # [1, BLOCK_D] pointers
    t_base = delta_ptr + pid_b * s_tb + dd64[None, :] * s_td
    z_base = z_ptr + pid_b * s_zb + dd64[None, :] * s_zd
    y_base = y_ptr + (pid_b * dim + dd64)[None, :] * L
    st_base = states_ptr + _outer((pid_b * dim + dd64) * n_chunks * N, nn, TND)
    first = (tt == 0)[:, None, None]
    last = (tt == T - 1)[:, None, None]
    for c in range(n_chunks):
        if SAVE:  # the state entering chunk c, for the backward
            tl.store(st_base + c * N, h, mask=s_mask)
        tg = (c * T + tt).to(tl.int64)[:, None]  # [T, 1] global time index
        m2 = (tg < L) & dmask[None, :]  # [T, BLOCK_D]
        dt, _ = _load_delta(t_base + tg * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_base + tg * s_ul, mask=m2, other=0.0).to(tl.float32)
        if B_SEL:
            B3 = _tn(tl.load(B_ptr + pid_b * s_bb + tg * s_b1 + nn[None, :] * s_b0,
                             mask=(tg < L) & nmask[None, :], other=0.0).to(tl.float32), TND)
        a = _exp2(_td(dt, TND) * A2[None], FAST_EXP)  # [T, N, BLOCK_D] (TND)
        b = _td(dt * u, TND) * B3
        b = tl.where(first, b + a * h[None], b)  # the carry enters at the chunk's first step
        _, hs = tl.associative_scan((a, b), 0, _fwd_combine)  # states h_t of the chunk
        if C_SEL:
            C3 = _tn(tl.load(C_ptr + pid_b * s_cb + tg * s_c1 + nn[None, :] * s_c0,
                             mask=(tg < L) & nmask[None, :], other=0.0).to(tl.float32), TND)
        y = _sum_n(hs * C3, TND)  # [T, BLOCK_D]
        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            zz = tl.load(z_base + tg * s_zl, mask=m2, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(y_base + tg, y, mask=m2)
        # padded steps (t >= L) have a = 1, b = 0, so the last row is the state at min(chunk end, L) - 1
        h = tl.sum(tl.where(last, hs, 0.0), axis=0)
    tl.store(last_ptr + s_off, h, mask=s_mask)


@triton.jit
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                L, dim, n_chunks,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr, TND: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_EXP: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    dd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    nn = tl.arange(0, N_P)
    tt = tl.arange(0, T)
    dmask = dd < dim
    nmask = nn < N
    dd64 = dd.to(tl.int64)
    s_mask = _outer_and(dmask, nmask, TND)
    A = tl.load(A_ptr + _outer(dd64 * s_a0, nn * s_a1, TND), mask=s_mask, other=0.0).to(tl.float32)
    A2 = A * LOG2E
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    if not B_SEL:
        B3 = tl.load(B_ptr + _outer(dd64 * s_b0, nn * s_b1, TND), mask=s_mask, other=0.0).to(tl.float32)[None]
    if not C_SEL:
        C3 = tl.load(C_ptr + _outer(dd64 * s_c0, nn * s_c1, TND), mask=s_mask, other=0.0).to(tl.float32)[None]
    s_off = _outer((pid_b * dim + dd64) * N, nn, TND)  # into [batch, dim, N] fp32 buffers
    if HAS_DLAST:  # gradient of the state at the end of the current chunk, flowing in from later steps
        carry = tl.load(dlast_ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros(s_mask.shape, dtype=tl.float32)
    dA_acc = tl.zeros(s_mask.shape, dtype=tl.float32)
    dB_acc = tl.zeros(s_mask.shape, dtype=tl.float32)  # LTI only
    dC_acc = tl.zeros(s_mask.shape, dtype=tl.float32)  # LTI only
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    row = (pid_b * dim + dd64)[None, :] * L  # [1, BLOCK_D] rows of the contiguous [batch, dim, L] gradients
    u_base = u_ptr + pid_b * s_ub + dd64[None, :] * s_ud
    t_base = delta_ptr + pid_b * s_tb + dd64[None, :] * s_td
    z_base = z_ptr + pid_b * s_zb + dd64[None, :] * s_zd
    g_base = dy_ptr + pid_b * s_gb + dd64[None, :] * s_gd
    st_base = states_ptr + _outer((pid_b * dim + dd64) * n_chunks * N, nn, TND)
    part = ((pid_b * tl.num_programs(1) + pid_d) * N + nn[None, :]) * L  # [1, N] rows of the dB/dC partials
    first = (tt == 0)[:, None, None]
    last = (tt == T - 1)[:, None, None]
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        tg = (c * T + tt).to(tl.int64)[:, None]
        m2 = (tg < L) & dmask[None, :]  # [T, BLOCK_D]
        tn_mask = (tg < L) & nmask[None, :]  # [T, N]
        dt, raw = _load_delta(t_base + tg * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_base + tg * s_ul, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(g_base + tg * s_gl, mask=m2, other=0.0).to(tl.float32)
        if B_SEL:
            B3 = _tn(tl.load(B_ptr + pid_b * s_bb + tg * s_b1 + nn[None, :] * s_b0, mask=tn_mask,
                             other=0.0).to(tl.float32), TND)
        if C_SEL:
            C3 = _tn(tl.load(C_ptr + pid_b * s_cb + tg * s_c1 + nn[None, :] * s_c0, mask=tn_mask,
                             other=0.0).to(tl.float32), TND)
        # recompute the chunk's states from the saved state entering it
        h0 = tl.load(st_base + c * N, mask=s_mask, other=0.0)
        dtu = dt * u
        a = _exp2(_td(dt, TND) * A2[None], FAST_EXP)
        b = _td(dtu, TND) * B3
        _, hs = tl.associative_scan((a, tl.where(first, b + a * h0[None], b)), 0, _fwd_combine)
        # output gate and skip
        if HAS_Z:
            zz = tl.load(z_base + tg * s_zl, mask=m2, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            y = _sum_n(hs * C3, TND)
            if HAS_D:
                y += Dv[None, :] * u
            tl.store(dz_ptr + row + tg, dout * y * sg * (1.0 + zz * (1.0 - sg)), mask=m2)
            dy = dout * zz * sg
        else:
            dy = dout
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=0)
        dy3 = _td(dy, TND)
        if C_SEL:  # dC = sum over channels of dy_t h_t
            tl.store(dCp_ptr + part + tg, _sum_d(dy3 * hs, TND), mask=tn_mask)
        else:
            dC_acc += tl.sum(dy3 * hs, axis=0)
        # state gradient g_t = C_t dy_t + a_{t+1} g_{t+1}; the carry enters at the chunk's last step
        cg = dy3 * C3
        cg = tl.where(last, cg + carry[None], cg)
        _, _, gs = tl.associative_scan((a, tl.full(a.shape, 1.0, tl.float32), cg), 0, _bwd_combine, reverse=True)
        carry = tl.sum(tl.where(first, a * gs, 0.0), axis=0)
        gah = gs * (hs - b)  # g_t a_t h_{t-1}
        dA_acc += tl.sum(gah * _td(dt, TND), axis=0)
        gB = _sum_n(gs * B3, TND)  # [T, BLOCK_D]
        ddt = gB * u + _sum_n(gah * A[None], TND)
        du = gB * dt
        if HAS_D:
            du += dy * Dv[None, :]
        if B_SEL:
            tl.store(dBp_ptr + part + tg, _sum_d(gs * _td(dtu, TND), TND), mask=tn_mask)
        else:
            dB_acc += tl.sum(gs * _td(dtu, TND), axis=0)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)  # padded steps have a nonzero g (A) term; keep it out of dbias
        dbias_acc += tl.sum(ddt, axis=0)
        tl.store(du_ptr + row + tg, du, mask=m2)
        tl.store(ddelta_ptr + row + tg, ddt, mask=m2)
    tl.store(dh0_ptr + s_off, carry, mask=s_mask)
    tl.store(dA_ptr + s_off, dA_acc, mask=s_mask)
    if not B_SEL:
        tl.store(dBp_ptr + s_off, dB_acc, mask=s_mask)
    if not C_SEL:
        tl.store(dCp_ptr + s_off, dC_acc, mask=s_mask)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + dd64, dD_acc, mask=dmask)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + dd64, dbias_acc, mask=dmask)


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


def _bsz(N: int) -> int:
    return triton.next_power_of_2(N)


def _fast_exp(x: torch.Tensor) -> bool:
    # inline PTX only where the kernels are compiled for an NVIDIA GPU (not in the interpreter)
    return x.is_cuda and torch.version.hip is None and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, cfg):
    """Launch the forward (cfg: chunk, fwd block_d, fwd num_warps, bwd block_d, bwd num_warps, tnd). Returns y [batch, dim, L] (u's dtype), last state [batch, dim, N] fp32 and the states
    entering each chunk [batch, dim, n_chunks, N] fp32 (empty unless save_states)."""
    chunk, block_d, num_warps, _, _, tnd = cfg
    batch, dim, L = u.shape
    N = A.shape[1]
    n_chunks = triton.cdiv(L, chunk)
    y = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
    last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)
    states = torch.empty(batch, dim, n_chunks if save_states else 0, N, device=u.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    zz = z if z is not None else u  # dummy pointer when absent (never read)
    grid = (batch, triton.cdiv(dim, block_d))
    _fwd_kernel[grid](
        u, delta, A, B, C, D, zz, delta_bias, h0, y, last, states, L, dim, n_chunks,
        *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        N=N, N_P=_bsz(N), BLOCK_D=block_d, T=chunk, B_SEL=B.dim() == 3, C_SEL=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=delta_softplus, SAVE=save_states, TND=bool(tnd), FAST_EXP=_fast_exp(u), num_warps=num_warps)
    return y, last, states


def _bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, cfg):
    """Launch the backward and reduce the partials in a fixed order. Returns the gradients of
    (u, delta, A, B, C, D, z, delta_bias, initial_state), each in its input's dtype; D, z, delta_bias get an
    empty tensor when absent. The initial-state gradient is fp32 [batch, dim, N]."""
    chunk, _, _, block_d, num_warps, tnd = cfg
    batch, dim, L = u.shape
    N = A.shape[1]
    n_chunks = triton.cdiv(L, chunk)
    assert states.shape == (batch, dim, n_chunks, N), "saved chunk states do not match the chunk size"
    n_blk = triton.cdiv(dim, block_d)
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
    grid = (batch, n_blk)
    _bwd_kernel[grid](
        u, delta, A, B, C, D, zz, delta_bias, states, dy, dlast,
        du, ddelta, dz if z is not None else du, dA, dBp, dCp, dD, dbias, dh0, L, dim, n_chunks,
        *u.stride(), *delta.stride(), *zz.stride(), *dy.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        N=N, N_P=_bsz(N), BLOCK_D=block_d, T=chunk, B_SEL=B.dim() == 3, C_SEL=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_DLAST=dlast is not None,
        SOFTPLUS=delta_softplus, TND=bool(tnd), FAST_EXP=_fast_exp(u), num_warps=num_warps)
    # fixed-order reductions of the partials (deterministic)
    dB = dBp.sum(1) if B.dim() == 3 else dBp.sum(0)  # [batch, N, L] or [dim, N]
    dC = dCp.sum(1) if C.dim() == 3 else dCp.sum(0)
    return (du, ddelta, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
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
    n_chunks = (L + cfg[0] - 1) // cfg[0] if save_states else 0
    return (u.new_empty(batch, dim, L), u.new_empty(batch, dim, N, dtype=torch.float32),
            u.new_empty(batch, dim, n_chunks, N, dtype=torch.float32))


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


def _check(u, delta, A, B, C, D, z, delta_bias, initial_state, cfg):
    from hybrid.kernels.selective_scan.interface import check_shapes

    check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if t is not None and t.dtype not in _FLOATS:
            raise ValueError(f"selective_scan_triton: {name} has dtype {t.dtype}; allowed: fp16, bf16, fp32 "
                             f"(use backend='reference' for fp64)")
    for name, v in zip(("chunk_size", "block_d", "num_warps", "block_d", "num_warps"), cfg[:5]):
        if v < 1 or v & (v - 1):
            raise ValueError(f"selective_scan_triton: {name}={v}; allowed: a power of two")


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, initial_state=None, *, chunk_size=None, block_d=None,
                          num_warps=None, tnd=None):
    """The selective scan with our Triton kernels (any strides; fp16, bf16, fp32 inputs; fp32 state).

    Args:
        u, delta, z: [batch, dim, L]. A: [dim, N]. B, C: [batch, N, L] (selective) or [dim, N] (LTI).
        D, delta_bias: [dim]. initial_state: [batch, dim, N].
        chunk_size, block_d, num_warps, tnd: tile shape (powers of two; tnd picks the axis order) for both kernels,
        defaults from CONFIG. They change speed and rounding only.
    Returns:
        y [batch, dim, L] in u's dtype; with return_last_state, (y, last_state [batch, dim, N] fp32).
    """
    c = CONFIG
    cfg = [chunk_size or c["chunk"], block_d or c["fwd_block_d"], num_warps or c["fwd_num_warps"],
           block_d or c["bwd_block_d"], num_warps or c["bwd_num_warps"], int(c["tnd"] if tnd is None else tnd)]
    _check(u, delta, A, B, C, D, z, delta_bias, initial_state, cfg)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, last, _ = _fwd_op(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), save, cfg)
    return (y, last) if return_last_state else y
