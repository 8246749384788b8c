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
import torch
import triton
import triton.language as tl

DEFAULT_CHUNK = 32  # T: time steps per chunk (tile width, and the spacing of the saved states)
DEFAULT_BLOCK_D = 16  # channels per program
DEFAULT_NUM_WARPS = 8


@triton.jit
def _linear_combine(a1, b1, a2, b2):
    # composition of x -> a1 x + b1 followed by x -> a2 x + b2; with reverse=True the same function gives
    # g_t = a_t g_{t+1} + b_t (the scan runs as if the axis were flipped)
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _load_delta(delta_ptr, offs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta tile [BLOCK_D, T] in fp32 after bias and softplus; 0 where masked so that exp(0 * A) = 1 there."""
    raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = _softplus(raw) if SOFTPLUS else raw
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
                y_ptr, last_ptr, states_ptr,
                L, dim, n_chunks,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D] channel ids
    nn = tl.arange(0, N_P)
    tt = tl.arange(0, T)
    dmask = dd < dim
    nmask = nn < N
    dd64 = dd.to(tl.int64)
    dn_mask = dmask[:, None] & nmask[None, :]
    # A [dim, N] -> [BLOCK_D, N_P]; padded states get A = 0, B = C = 0: they stay 0 and add nothing
    A = tl.load(A_ptr + dd64[:, None] * s_a0 + nn[None, :] * s_a1, mask=dn_mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    if not B_SEL:  # LTI: B [dim, N]
        Bt = tl.load(B_ptr + dd64[:, None] * s_b0 + nn[None, :] * s_b1, mask=dn_mask, other=0.0).to(tl.float32)
    if not C_SEL:
        Ct = tl.load(C_ptr + dd64[:, None] * s_c0 + nn[None, :] * s_c1, mask=dn_mask, other=0.0).to(tl.float32)
    dn_off = (pid_b * dim + dd64)[:, None] * N + nn[None, :]  # offsets into [batch, dim, N] fp32 buffers
    if HAS_H0:
        h = tl.load(h0_ptr + dn_off, mask=dn_mask, other=0.0)
    else:
        h = tl.zeros([BLOCK_D, N_P], dtype=tl.float32)
    u_base = u_ptr + pid_b * s_ub + dd64[:, None] * s_ud  # [BLOCK_D, 1] pointers
    t_base = delta_ptr + pid_b * s_tb + dd64[:, None] * s_td
    z_base = z_ptr + pid_b * s_zb + dd64[:, None] * s_zd
    y_base = y_ptr + (pid_b * dim + dd64)[:, None] * L
    for c in range(0, n_chunks):
        if SAVE:  # the state entering chunk c, for the backward
            tl.store(states_ptr + ((pid_b * dim + dd64)[:, None] * n_chunks + c) * N + nn[None, :], h, mask=dn_mask)
        tg = (c * T + tt).to(tl.int64)  # [T] global time index
        tmask = tg < L
        m2 = dmask[:, None] & tmask[None, :]  # [BLOCK_D, T]
        dt, _ = _load_delta(t_base, tg[None, :] * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_base + tg[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
        if B_SEL:  # [N_P, T] -> broadcast over channels
            Bt = tl.load(B_ptr + pid_b * s_bb + nn[:, None] * s_b0 + tg[None, :] * s_b1,
                         mask=nmask[:, None] & tmask[None, :], other=0.0).to(tl.float32)
            b = (dt * u)[:, None, :] * Bt[None, :, :]  # [BLOCK_D, N_P, T]
        else:
            b = (dt * u)[:, None, :] * Bt[:, :, None]
        a = tl.exp(dt[:, None, :] * A[:, :, None])  # [BLOCK_D, N_P, T]
        pa, hs = tl.associative_scan((a, b), 2, _linear_combine)
        hs = hs + pa * h[:, :, None]  # states h_t of the chunk
        if C_SEL:
            Cc = tl.load(C_ptr + pid_b * s_cb + nn[:, None] * s_c0 + tg[None, :] * s_c1,
                         mask=nmask[:, None] & tmask[None, :], other=0.0).to(tl.float32)
            y = tl.sum(hs * Cc[None, :, :], axis=1)  # [BLOCK_D, T]
        else:
            y = tl.sum(hs * Ct[:, :, None], axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zz = tl.load(z_base + tg[None, :] * s_zl, mask=m2, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(y_base + tg[None, :], y, mask=m2)
        # padded steps (t >= L) have a = 1, b = 0, so the last column is the state at min(chunk end, L) - 1
        h = tl.sum(tl.where((tt == T - 1)[None, None, :], hs, 0.0), axis=2)
    tl.store(last_ptr + dn_off, h, mask=dn_mask)


@triton.jit
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dy_ptr, dlast_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dBp_ptr, dCp_ptr, dD_ptr, dbias_ptr, dh0_ptr,
                L, dim, n_chunks,
                s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl,
                s_a0, s_a1, s_bb, s_b0, s_b1, s_cb, s_c0, s_c1,
                N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr,
                B_SEL: tl.constexpr, C_SEL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    dd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    nn = tl.arange(0, N_P)
    tt = tl.arange(0, T)
    dmask = dd < dim
    nmask = nn < N
    dd64 = dd.to(tl.int64)
    dn_mask = dmask[:, None] & nmask[None, :]
    A = tl.load(A_ptr + dd64[:, None] * s_a0 + nn[None, :] * s_a1, mask=dn_mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_D else None
    if not B_SEL:
        Bt = tl.load(B_ptr + dd64[:, None] * s_b0 + nn[None, :] * s_b1, mask=dn_mask, other=0.0).to(tl.float32)
    if not C_SEL:
        Ct = tl.load(C_ptr + dd64[:, None] * s_c0 + nn[None, :] * s_c1, mask=dn_mask, other=0.0).to(tl.float32)
    dn_off = (pid_b * dim + dd64)[:, None] * N + nn[None, :]  # into [batch, dim, N] fp32 buffers
    if HAS_DLAST:  # gradient of the state at the end of the current chunk, flowing in from later steps
        carry = tl.load(dlast_ptr + dn_off, mask=dn_mask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK_D, N_P], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, N_P], dtype=tl.float32)
    dB_acc = tl.zeros([BLOCK_D, N_P], dtype=tl.float32)  # LTI only
    dC_acc = tl.zeros([BLOCK_D, N_P], dtype=tl.float32)  # LTI only
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    row = (pid_b * dim + dd64)[:, None]  # [BLOCK_D, 1] row of the contiguous [batch, dim, L] gradient buffers
    u_base = u_ptr + pid_b * s_ub + dd64[:, None] * s_ud
    t_base = delta_ptr + pid_b * s_tb + dd64[:, None] * s_td
    z_base = z_ptr + pid_b * s_zb + dd64[:, None] * s_zd
    g_base = dy_ptr + pid_b * s_gb + dd64[:, None] * s_gd
    part = (pid_b * tl.num_programs(1) + pid_d) * N + nn[:, None]  # [N_P, 1] rows of the dB/dC partials
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        tg = (c * T + tt).to(tl.int64)
        tmask = tg < L
        m2 = dmask[:, None] & tmask[None, :]
        nt_mask = nmask[:, None] & tmask[None, :]
        dt, raw = _load_delta(t_base, tg[None, :] * s_tl, m2, bias, HAS_BIAS, SOFTPLUS)
        # delta one step later, inside this chunk only (the next chunk's first step is already in `carry`)
        nxt = dmask[:, None] & ((tt + 1 < T) & (tg + 1 < L))[None, :]
        dt_next, _ = _load_delta(t_base, (tg + 1)[None, :] * s_tl, nxt, bias, HAS_BIAS, SOFTPLUS)
        u = tl.load(u_base + tg[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
        dout = tl.load(g_base + tg[None, :] * s_gl, mask=m2, other=0.0).to(tl.float32)
        if B_SEL:
            Bt = tl.load(B_ptr + pid_b * s_bb + nn[:, None] * s_b0 + tg[None, :] * s_b1,
                         mask=nt_mask, other=0.0).to(tl.float32)
            Bx = Bt[None, :, :]  # [1, N_P, T]
        else:
            Bx = Bt[:, :, None]  # [BLOCK_D, N_P, 1]
        if C_SEL:
            Cc = tl.load(C_ptr + pid_b * s_cb + nn[:, None] * s_c0 + tg[None, :] * s_c1,
                         mask=nt_mask, other=0.0).to(tl.float32)
            Cx = Cc[None, :, :]
        else:
            Cx = Ct[:, :, None]
        # recompute the chunk's states from the saved state entering it
        h0 = tl.load(states_ptr + ((pid_b * dim + dd64)[:, None] * n_chunks + c) * N + nn[None, :],
                     mask=dn_mask, other=0.0)
        dtu = dt * u
        b = dtu[:, None, :] * Bx  # [BLOCK_D, N_P, T]
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        pa, hs = tl.associative_scan((a, b), 2, _linear_combine)
        hs = hs + pa * h0[:, :, None]
        # output gate and skip
        if HAS_Z:
            zz = tl.load(z_base + tg[None, :] * s_zl, mask=m2, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            y = tl.sum(hs * Cx, axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            dz = dout * y * sg * (1.0 + zz * (1.0 - sg))
            tl.store(dz_ptr + row * L + tg[None, :], dz, mask=m2)
            dy = dout * zz * sg
        else:
            dy = dout
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)
        # dC = sum over channels of dy_t h_t
        if C_SEL:
            tl.store(dCp_ptr + part * L + tg[None, :], tl.sum(dy[:, None, :] * hs, axis=0), mask=nt_mask)
        else:
            dC_acc += tl.sum(dy[:, None, :] * hs, axis=2)
        # state gradient g_t = C_t dy_t + a_{t+1} g_{t+1}, g at the chunk's last step gets the carry
        a_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        pg, gs = tl.associative_scan((a_next, dy[:, None, :] * Cx), 2, _linear_combine, reverse=True)
        gs = gs + pg * carry[:, :, None]
        carry = tl.sum(tl.where((tt == 0)[None, None, :], a * gs, 0.0), axis=2)
        ah = hs - b  # a_t h_{t-1}
        gah = gs * ah
        dA_acc += tl.sum(gah * dt[:, None, :], axis=2)
        gB = tl.sum(gs * Bx, axis=1)  # [BLOCK_D, T]
        ddt = gB * u + tl.sum(gah * A[:, :, None], axis=1)
        du = gB * dt
        if HAS_D:
            du += dy * Dv[:, None]
        if B_SEL:
            tl.store(dBp_ptr + part * L + tg[None, :], tl.sum(gs * dtu[:, None, :], axis=0), mask=nt_mask)
        else:
            dB_acc += tl.sum(gs * dtu[:, None, :], axis=2)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)  # padded steps have a nonzero g (A) term; keep it out of dbias
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + row * L + tg[None, :], du, mask=m2)
        tl.store(ddelta_ptr + row * L + tg[None, :], ddt, mask=m2)
    tl.store(dh0_ptr + dn_off, carry, mask=dn_mask)
    tl.store(dA_ptr + dn_off, dA_acc, mask=dn_mask)
    if not B_SEL:
        tl.store(dBp_ptr + dn_off, dB_acc, mask=dn_mask)
    if not C_SEL:
        tl.store(dCp_ptr + dn_off, dC_acc, mask=dn_mask)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + dd64, dD_acc, mask=dmask)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + dd64, dbias_acc, mask=dmask)


# ----------------------------------------------------------------------------------------------------------------
# launchers

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _bc_strides(X: torch.Tensor) -> tuple[int, int, int]:
    """(batch, N, L) strides of a selective B/C [batch, N, L], or (0, dim, N) strides of an LTI one [dim, N]."""
    return tuple(X.stride()) if X.dim() == 3 else (0, X.stride(0), X.stride(1))


def _bsz(N: int) -> int:
    return triton.next_power_of_2(N)


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, chunk, block_d, num_warps):
    """Launch the forward. Returns y [batch, dim, L] (u's dtype), last state [batch, dim, N] fp32 and the states
    entering each chunk [batch, dim, n_chunks, N] fp32 (empty unless save_states)."""
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
        SOFTPLUS=delta_softplus, SAVE=save_states, num_warps=num_warps)
    return y, last, states


def _bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk, block_d, num_warps):
    """Launch the backward and reduce the partials in a fixed order. Returns the gradients of
    (u, delta, A, B, C, D, z, delta_bias, initial_state), each in its input's dtype; D, z, delta_bias get an
    empty tensor when absent. The initial-state gradient is fp32 [batch, dim, N]."""
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
        SOFTPLUS=delta_softplus, num_warps=num_warps)
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
            chunk: int, block_d: int, num_warps: int) -> tuple[Tensor, Tensor, Tensor]:
    return _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, chunk, block_d,
                num_warps)


@_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, chunk, block_d, num_warps):
    batch, dim, L = u.shape
    N = A.shape[1]
    n_chunks = (L + chunk - 1) // chunk if save_states else 0
    return (u.new_empty(batch, dim, L), u.new_empty(batch, dim, N, dtype=torch.float32),
            u.new_empty(batch, dim, n_chunks, N, dtype=torch.float32))


@torch.library.custom_op("hybrid::selective_scan_bwd", mutates_args=())
def _bwd_op(dy: Tensor, dlast: Tensor | None, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
            D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None, states: Tensor, delta_softplus: bool,
            chunk: int, block_d: int, num_warps: int) -> list[Tensor]:
    return list(_bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk, block_d,
                     num_warps))


@_bwd_op.register_fake
def _(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk, block_d, num_warps):
    batch, dim, L = u.shape
    N = A.shape[1]
    return [torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), torch.empty_like(D) if D is not None else u.new_empty(0),
            torch.empty_like(z) if z is not None else u.new_empty(0),
            torch.empty_like(delta_bias) if delta_bias is not None else u.new_empty(0),
            u.new_empty(batch, dim, N, dtype=torch.float32)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, save_states, chunk, block_d, num_warps = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.cfg = (softplus, chunk, block_d, num_warps)
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
            None, None, None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# public function


def _check(u, delta, A, B, C, D, z, delta_bias, initial_state, chunk, block_d):
    from hybrid.kernels.selective_scan.interface import check_shapes

    check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if t is not None and t.dtype not in _FLOATS:
            raise ValueError(f"selective_scan_triton: {name} has dtype {t.dtype}; allowed: fp16, bf16, fp32 "
                             f"(use backend='reference' for fp64)")
    for name, v in (("chunk_size", chunk), ("block_d", block_d)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"selective_scan_triton: {name}={v}; allowed: a power of two")


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, initial_state=None, *, chunk_size=None, block_d=None,
                          num_warps=None):
    """The selective scan with our Triton kernels (any strides; fp16, bf16, fp32 inputs; fp32 state).

    Args:
        u, delta, z: [batch, dim, L]. A: [dim, N]. B, C: [batch, N, L] (selective) or [dim, N] (LTI).
        D, delta_bias: [dim]. initial_state: [batch, dim, N].
        chunk_size: time steps per chunk, a power of two (default DEFAULT_CHUNK); block_d: channels per program,
        a power of two (default DEFAULT_BLOCK_D). Both only change speed and rounding, never the result's meaning.
    Returns:
        y [batch, dim, L] in u's dtype; with return_last_state, (y, last_state [batch, dim, N] fp32).
    """
    chunk = chunk_size or DEFAULT_CHUNK
    bd = block_d or DEFAULT_BLOCK_D
    _check(u, delta, A, B, C, D, z, delta_bias, initial_state, chunk, bd)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, last, _ = _fwd_op(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), save, chunk, bd,
                         num_warps or DEFAULT_NUM_WARPS)
    return (y, last) if return_last_state else y
