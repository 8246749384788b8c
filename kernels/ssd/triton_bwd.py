"""The backward kernels of our Triton SSD (triton.py holds the forward, the shared helpers and the autograd Function).

With the forward's notation (README.md), per (batch, chunk), positions i (rows, outputs) and j (columns, sources):
    dCB_ij = sum over the group's heads of (dy_i . x_j) exp(acs_i - acs_j) dt_j          (i >= j, fp32)
    dC_i   = sum_h exp(acs_i) dy_i H_c^T  +  sum_{j<=i} dCB_ij B_j
    dB_j   = sum_h exp(acs_last - acs_j) dt_j x_j dS_c  +  sum_{i>=j} dCB_ij C_i
    dx_j   = exp(acs_last - acs_j) dt_j B_j dS_c^T  +  sum_{i>=j} CB_ij exp(acs_i - acs_j) dt_j dy_i      (per head)
The sums over heads sharing a group run inside one program (a loop over the group's heads), so dB and dC are
written once per group, never as per-head partials: mamba-ssm's decomposition (its chunk_scan_bwd_dcb, bmm_chunk_bwd,
chunk_state_bwd_db, chunk_scan_bwd_dC), written here without its atomics. The pieces of d acs and d dt that need
sums over the other axis of a [Q, Q] block pair are written per block pair ([b, h, blocks, L]) and summed by torch
in a fixed order. Four kernels: `_dcb_kernel` (per group and block pair: dCB, CB, the d acs / d dt block sums),
`_dc_kernel` and `_db_kernel` (per group and block), `_dx_kernel` (per head and block).
"""
import torch
import triton
import triton.language as tl

from hybrid.kernels.ssd.triton import BPS, LAUNCH, _chunk_outer, _dot, _lowp, _seg, _sizes, _state_pass_bwd_kernel

_DOT_DTYPE = {0: torch.float32, 1: torch.bfloat16, 2: torch.float16}  # what _dot multiplies in, per LOWP


@triton.jit
def _dcb_kernel(X, DT, ACS, ACS_LO, B, C, DY, DCB, CB, ROWP, COLP, DIAG, L, H, HG, P, N, Q, NBLK,
                sx_b, sx_l, sx_h, sb_b, sb_l, sb_g, sdt_b, sdt_l,
                BI: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr):
    """One block pair (rows ib >= columns jb) of chunk c for group g: DCB and CB [b, c, g, Q, Q] fp32 (see the module
    doc); per head h of the group, with m_ij = (dy_i . x_j) exp(acs_i - acs_j) CB_ij and i > j strictly:
    ROWP[b, h, jb, i] = sum_j m_ij dt_j (d acs_i as a row), COLP[b, h, ib, j] = sum_i m_ij (d dt_j; times -dt_j it is
    d acs_j as a column), and on the diagonal pair DIAG[b, h, j] = m_jj (d dt_j only). ROWP, COLP [b, h, NBLK, L]."""
    q, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # grid (pairs * G, chunks, batch): pairs fastest
    g, pair = q // (NBLK * NBLK), q % (NBLK * NBLK)
    ib, jb = pair // NBLK, pair % NBLK
    if jb > ib:
        return
    G = H // HG
    n_chunks = tl.cdiv(L, Q)
    r, p, n = tl.arange(0, BI), tl.arange(0, BP), tl.arange(0, BN)
    pos_i, pos_j = ib * BI + r, jb * BI + r
    valid_i, valid_j = pos_i < Q, pos_j < Q
    t_i, t_j = c * Q + pos_i, c * Q + pos_j
    c_i = tl.load(C + b.to(tl.int64) * sb_b + t_i[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_i[:, None] & (n[None, :] < N), other=0.0)
    b_j = tl.load(B + b.to(tl.int64) * sb_b + t_j[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_j[:, None] & (n[None, :] < N), other=0.0)
    cb = _dot(c_i, tl.trans(b_j), LOWP)  # [BI, BJ], once for the group's heads
    causal = (pos_i[:, None] >= pos_j[None, :]) & valid_i[:, None] & valid_j[None, :]
    strict = pos_i[:, None] > pos_j[None, :]
    dcb = tl.zeros((BI, BI), dtype=tl.float32)
    for hh in range(0, HG):
        h = g * HG + hh
        bh = b * H + h
        acs_base, lo_base = ACS + bh.to(tl.int64) * L, ACS_LO + bh.to(tl.int64) * L
        acs_i = tl.load(acs_base + t_i, mask=valid_i, other=0.0)
        lo_i = tl.load(lo_base + t_i, mask=valid_i, other=0.0)
        acs_j = tl.load(acs_base + t_j, mask=valid_j, other=0.0)
        lo_j = tl.load(lo_base + t_j, mask=valid_j, other=0.0)
        dt_j = tl.load(DT + b.to(tl.int64) * sdt_b + t_j * sdt_l + h, mask=valid_j, other=0.0)
        dy_i = tl.load(DY + b.to(tl.int64) * sx_b + t_i[:, None] * sx_l + h * sx_h + p[None, :],
                       mask=valid_i[:, None] & (p[None, :] < P), other=0.0)
        x_j = tl.load(X + b.to(tl.int64) * sx_b + t_j[:, None] * sx_l + h * sx_h + p[None, :],
                      mask=valid_j[:, None] & (p[None, :] < P), other=0.0)
        decay = tl.exp(tl.where(causal, _seg(acs_i, lo_i, acs_j, lo_j), -float("inf")))
        wd = _dot(dy_i, tl.trans(x_j), LOWP) * decay  # d loss / d (CB_ij dt_j)
        dcb += wd * dt_j[None, :]
        m = wd * cb
        # the diagonal (exp(acs_i - acs_i) = 1) adds to d acs_i as a row what it subtracts as a column: it stays out
        # of both, or dA drowns in their rounding when the off-diagonal decays are small (large dt |A|)
        off = tl.where(strict, m, 0.0)
        tl.store(ROWP + (bh.to(tl.int64) * NBLK + jb) * L + t_i, tl.sum(off * dt_j[None, :], 1), mask=valid_i)
        tl.store(COLP + (bh.to(tl.int64) * NBLK + ib) * L + t_j, tl.sum(off, 0), mask=valid_j)
        if ib == jb:
            tl.store(DIAG + bh.to(tl.int64) * L + t_j, tl.sum(tl.where(strict | ~causal, 0.0, m), 0), mask=valid_j)
    blk = ((b.to(tl.int64) * n_chunks + c) * G + g) * Q * Q + pos_i[:, None] * Q + pos_j[None, :]
    both = valid_i[:, None] & valid_j[None, :]
    tl.store(DCB + blk, dcb, mask=both)
    tl.store(CB + blk, cb, mask=both)


@triton.jit
def _dc_kernel(ACS, B, C, HS, DY, DCB, DC, DACS_ST, L, H, HG, P, N, Q, NBLK,
               sx_b, sx_l, sx_h, sb_b, sb_l, sb_g, sdc_b, sdc_l, sdc_g,
               BI: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr):
    """dC [b, L, g, N] fp32 for the rows of block ib of chunk c (module doc), and per head of the group
    DACS_ST[b, h, i] = exp(acs_i) C_i . (dy_i H_c): d acs_i through the entering state's share of y_i."""
    q, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # grid (blocks * G, chunks, batch)
    g, ib = q // NBLK, q % NBLK
    G = H // HG
    n_chunks = tl.cdiv(L, Q)
    r, p, n = tl.arange(0, BI), tl.arange(0, BP), tl.arange(0, BN)
    pos_i = ib * BI + r
    valid_i = pos_i < Q
    t_i = c * Q + pos_i
    c_i = tl.load(C + b.to(tl.int64) * sb_b + t_i[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_i[:, None] & (n[None, :] < N), other=0.0).to(tl.float32)
    acc = tl.zeros((BI, BN), dtype=tl.float32)
    for hh in range(0, HG):
        h = g * HG + hh
        bh = b * H + h
        e_i = tl.exp(tl.load(ACS + bh.to(tl.int64) * L + t_i, mask=valid_i, other=0.0))
        dy_i = tl.load(DY + b.to(tl.int64) * sx_b + t_i[:, None] * sx_l + h * sx_h + p[None, :],
                       mask=valid_i[:, None] & (p[None, :] < P), other=0.0)
        hs = HS + ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
        h_c = tl.load(hs + p[:, None] * N + n[None, :], mask=(p[:, None] < P) & (n[None, :] < N), other=0.0)
        t = _dot(dy_i, h_c, LOWP)  # [BI, BN]
        acc += t * e_i[:, None]
        tl.store(DACS_ST + bh.to(tl.int64) * L + t_i, tl.sum(c_i * t, 1) * e_i, mask=valid_i)
    dcb_base = DCB + ((b.to(tl.int64) * n_chunks + c) * G + g) * Q * Q
    for jb in range(0, ib + 1):
        pos_j = jb * BI + r
        valid_j = pos_j < Q
        dcb = tl.load(dcb_base + pos_i[:, None] * Q + pos_j[None, :], mask=valid_i[:, None] & valid_j[None, :],
                      other=0.0)
        b_j = tl.load(B + b.to(tl.int64) * sb_b + (c * Q + pos_j)[:, None] * sb_l + g * sb_g + n[None, :],
                      mask=valid_j[:, None] & (n[None, :] < N), other=0.0)
        acc += _dot(dcb, b_j, LOWP)
    tl.store(DC + b.to(tl.int64) * sdc_b + t_i[:, None] * sdc_l + g * sdc_g + n[None, :], acc,
             mask=valid_i[:, None] & (n[None, :] < N))


@triton.jit
def _db_kernel(X, DT, ACS, ACS_LO, B, C, DS, DCB, DB, SHARE, SLAST, L, T, H, HG, P, N, Q, NBLK,
               sx_b, sx_l, sx_h, sb_b, sb_l, sb_g, sdt_b, sdt_l, sdc_b, sdc_l, sdc_g,
               BI: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr):
    """dB [b, L, g, N] fp32 for the columns of block jb of chunk c (module doc), and per head of the group, through
    S_c: SHARE[b, h, j] = exp(acs_last - acs_j) B_j . (x_j dS_c) (d dt_j), SLAST[b, h, j] = SHARE dt_j (d acs_last;
    minus it is d acs_j), 0 at the chunk's last step before the padding (T: the length before it), which like the
    diagonal would add to d acs_last what it subtracts from its own d acs."""
    q, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # grid (blocks * G, chunks, batch)
    g, jb = q // NBLK, q % NBLK
    G = H // HG
    n_chunks = tl.cdiv(L, Q)
    r, p, n = tl.arange(0, BI), tl.arange(0, BP), tl.arange(0, BN)
    pos_j = jb * BI + r
    valid_j = pos_j < Q
    t_j = c * Q + pos_j
    b_j = tl.load(B + b.to(tl.int64) * sb_b + t_j[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_j[:, None] & (n[None, :] < N), other=0.0).to(tl.float32)
    last = tl.minimum(c * Q + Q, T) - 1
    acc = tl.zeros((BI, BN), dtype=tl.float32)
    for hh in range(0, HG):
        h = g * HG + hh
        bh = b * H + h
        acs_base, lo_base = ACS + bh.to(tl.int64) * L, ACS_LO + bh.to(tl.int64) * L
        acs_j = tl.load(acs_base + t_j, mask=valid_j, other=0.0)
        lo_j = tl.load(lo_base + t_j, mask=valid_j, other=0.0)
        acs_last, lo_last = tl.load(acs_base + c * Q + Q - 1), tl.load(lo_base + c * Q + Q - 1)
        dt_j = tl.load(DT + b.to(tl.int64) * sdt_b + t_j * sdt_l + h, mask=valid_j, other=0.0)
        to_end = tl.where(valid_j, tl.exp((acs_last - acs_j) + (lo_last - lo_j)), 0.0)
        x_j = tl.load(X + b.to(tl.int64) * sx_b + t_j[:, None] * sx_l + h * sx_h + p[None, :],
                      mask=valid_j[:, None] & (p[None, :] < P), other=0.0)
        ds = DS + ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
        ds_c = tl.load(ds + p[:, None] * N + n[None, :], mask=(p[:, None] < P) & (n[None, :] < N), other=0.0)
        t = _dot(x_j, ds_c, LOWP)  # [BJ, BN]: x_j^T dS_c
        acc += t * (to_end * dt_j)[:, None]
        share = to_end * tl.sum(b_j * t, 1)
        tl.store(SHARE + bh.to(tl.int64) * L + t_j, share, mask=valid_j)
        tl.store(SLAST + bh.to(tl.int64) * L + t_j, tl.where(t_j == last, 0.0, share * dt_j), mask=valid_j)
    dcb_base = DCB + ((b.to(tl.int64) * n_chunks + c) * G + g) * Q * Q
    for ib in range(jb, NBLK):
        pos_i = ib * BI + r
        valid_i = pos_i < Q
        dcb = tl.load(dcb_base + pos_i[:, None] * Q + pos_j[None, :], mask=valid_i[:, None] & valid_j[None, :],
                      other=0.0)
        c_i = tl.load(C + b.to(tl.int64) * sb_b + (c * Q + pos_i)[:, None] * sb_l + g * sb_g + n[None, :],
                      mask=valid_i[:, None] & (n[None, :] < N), other=0.0)
        acc += _dot(tl.trans(dcb), c_i, LOWP)
    tl.store(DB + b.to(tl.int64) * sdc_b + t_j[:, None] * sdc_l + g * sdc_g + n[None, :], acc,
             mask=valid_j[:, None] & (n[None, :] < N))


@triton.jit
def _dx_kernel(X, DT, ACS, ACS_LO, B, CB, DS, DY, D, DX, DDP, L, H, HG, P, N, Q, NBLK,
               sx_b, sx_l, sx_h, sb_b, sb_l, sb_g, sdt_b, sdt_l,
               BI: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, LOWP: tl.constexpr,
               HAS_D: tl.constexpr, D_CH: tl.constexpr):
    """DX [b, L, h, P] (X's dtype and strides) for the columns of block jb of chunk c, one head (module doc); CB is the
    [b, c, g, Q, Q] fp32 that _dcb_kernel wrote. With HAS_D (D [h], or [h, P] with D_CH, fp32): DX += D dy_j and
    DDP[b, h, c, jb] [P] = sum_j dy_j x_j, this block's share of dD."""
    q, c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # grid (blocks * heads, chunks, batch)
    h, jb = q // NBLK, q % NBLK
    bh = b * H + h
    G = H // HG
    g = h // HG
    n_chunks = tl.cdiv(L, Q)
    r, p, n = tl.arange(0, BI), tl.arange(0, BP), tl.arange(0, BN)
    pos_j = jb * BI + r
    valid_j = pos_j < Q
    t_j = c * Q + pos_j
    acs_base, lo_base = ACS + bh.to(tl.int64) * L, ACS_LO + bh.to(tl.int64) * L
    acs_j = tl.load(acs_base + t_j, mask=valid_j, other=0.0)
    lo_j = tl.load(lo_base + t_j, mask=valid_j, other=0.0)
    acs_last, lo_last = tl.load(acs_base + c * Q + Q - 1), tl.load(lo_base + c * Q + Q - 1)
    dt_j = tl.load(DT + b.to(tl.int64) * sdt_b + t_j * sdt_l + h, mask=valid_j, other=0.0)
    b_j = tl.load(B + b.to(tl.int64) * sb_b + t_j[:, None] * sb_l + g * sb_g + n[None, :],
                  mask=valid_j[:, None] & (n[None, :] < N), other=0.0)
    ds = DS + ((b.to(tl.int64) * n_chunks + c) * H + h) * P * N
    ds_c = tl.load(ds + p[:, None] * N + n[None, :], mask=(p[:, None] < P) & (n[None, :] < N), other=0.0)
    to_end = tl.where(valid_j, tl.exp((acs_last - acs_j) + (lo_last - lo_j)), 0.0)
    dx = _dot(b_j, tl.trans(ds_c), LOWP) * (to_end * dt_j)[:, None]  # [BJ, BP]
    cb_base = CB + ((b.to(tl.int64) * n_chunks + c) * G + g) * Q * Q
    for ib in range(jb, NBLK):
        pos_i = ib * BI + r
        valid_i = pos_i < Q
        t_i = c * Q + pos_i
        acs_i = tl.load(acs_base + t_i, mask=valid_i, other=0.0)
        lo_i = tl.load(lo_base + t_i, mask=valid_i, other=0.0)
        causal = (pos_i[:, None] >= pos_j[None, :]) & valid_i[:, None] & valid_j[None, :]
        cb = tl.load(cb_base + pos_i[:, None] * Q + pos_j[None, :], mask=causal, other=0.0)
        decay = tl.exp(tl.where(causal, _seg(acs_i, lo_i, acs_j, lo_j), -float("inf")))
        dy_i = tl.load(DY + b.to(tl.int64) * sx_b + t_i[:, None] * sx_l + h * sx_h + p[None, :],
                       mask=valid_i[:, None] & (p[None, :] < P), other=0.0)
        dx += _dot(tl.trans(cb * decay * dt_j[None, :]), dy_i, LOWP)
    if HAS_D:
        tile = b.to(tl.int64) * sx_b + t_j[:, None] * sx_l + h * sx_h + p[None, :]
        inside = valid_j[:, None] & (p[None, :] < P)
        dy_j = tl.load(DY + tile, mask=inside, other=0.0).to(tl.float32)
        x_j = tl.load(X + tile, mask=inside, other=0.0).to(tl.float32)
        if D_CH:
            dx += dy_j * tl.load(D + h * P + p, mask=p < P, other=0.0)[None, :]
        else:
            dx += dy_j * tl.load(D + h)
        tl.store(DDP + ((bh.to(tl.int64) * n_chunks + c) * NBLK + jb) * P + p, tl.sum(dy_j * x_j, 0), mask=p < P)
    tl.store(DX + b.to(tl.int64) * sx_b + t_j[:, None] * sx_l + h * sx_h + p[None, :], dx.to(DX.dtype.element_ty),
             mask=valid_j[:, None] & (p[None, :] < P))


def ssd_core_backward(x, dt, acs, acs_lo, B, C, D, HS, dy, dhT, Q, T):
    """Gradients of ssd_core_forward: dx [b, L, h, P] in x's dtype; ddt [b, L, h], dacs [b, h, L], dB and dC
    [b, L, g, N], dD (D's shape, None without D), dh0 [b, h, P, N], all fp32. dy has x's strides (and dtype); dhT
    may be None; T: the length before padding."""
    batch, L, H, P, G, N, n_chunks, bi, bp, bn = _sizes(x, B, Q)
    nblk, lowp = triton.cdiv(Q, bi), _lowp(x)
    f32 = dict(device=x.device, dtype=torch.float32)
    Gs = _chunk_outer(dy, C, dt, acs, acs_lo, Q, state=False, lowp=lowp)
    # dS only enters _dot, which rounds it to its dtype anyway: stored so (half the bytes for 16-bit inputs)
    dS, dh0 = torch.empty_like(Gs, dtype=_DOT_DTYPE[lowp]), torch.empty(batch, H, P, N, **f32)
    n_pb = triton.cdiv(P, BPS)
    ddecay = torch.empty(batch, H, n_chunks, n_pb, **f32)
    _state_pass_bwd_kernel[(batch * H, n_pb)](Gs, acs, HS, dhT if dhT is not None else dh0, dS, ddecay, dh0,
                                              L, H, P, N, Q, HAS_DHT=dhT is not None, BPS=BPS, BN=bn,
                                              **LAUNCH["state_pass_bwd"])
    del Gs
    ddecay = ddecay.sum(-1)  # [b, h, n_chunks]: the row blocks' shares in a fixed order
    strides = (x.stride(0), x.stride(1), x.stride(2), B.stride(0), B.stride(1), B.stride(2))
    tiles = dict(BI=bi, BP=bp, BN=bn, LOWP=lowp)
    dCB, CB = torch.empty(batch, n_chunks, G, Q, Q, **f32), torch.empty(batch, n_chunks, G, Q, Q, **f32)
    rowp, colp = torch.zeros(batch, H, nblk, L, **f32), torch.zeros(batch, H, nblk, L, **f32)
    diag = torch.zeros(batch, H, L, **f32)
    _dcb_kernel[(nblk * nblk * G, n_chunks, batch)](x, dt, acs, acs_lo, B, C, dy, dCB, CB, rowp, colp, diag,
                                                    L, H, H // G, P, N, Q, nblk, *strides, dt.stride(0),
                                                    dt.stride(1), **tiles, **LAUNCH["dcb"])
    dC, dB = torch.empty(batch, L, G, N, **f32), torch.empty(batch, L, G, N, **f32)
    dacs_state, share, slast = (torch.empty(batch, H, L, **f32) for _ in range(3))
    _dc_kernel[(nblk * G, n_chunks, batch)](acs, B, C, HS, dy, dCB, dC, dacs_state, L, H, H // G, P, N, Q, nblk,
                                            *strides, dC.stride(0), dC.stride(1), dC.stride(2), **tiles, **LAUNCH["dc"])
    _db_kernel[(nblk * G, n_chunks, batch)](x, dt, acs, acs_lo, B, C, dS, dCB, dB, share, slast, L, T, H, H // G,
                                            P, N, Q, nblk, *strides, dt.stride(0), dt.stride(1), dB.stride(0),
                                            dB.stride(1), dB.stride(2), **tiles, **LAUNCH["db"])
    del dCB
    dx = torch.empty_like(x)  # written in x's dtype
    assert dx.stride() == dy.stride(), "x and dy must be contiguous"
    ddp = torch.empty(batch, H, n_chunks, nblk, P, **f32) if D is not None else None
    _dx_kernel[(nblk * H, n_chunks, batch)](x, dt, acs, acs_lo, B, CB, dS, dy, D if D is not None else x, dx,
                                            ddp if D is not None else dx, L, H, H // G, P, N, Q, nblk, *strides,
                                            dt.stride(0), dt.stride(1), **tiles, HAS_D=D is not None,
                                            D_CH=D is not None and D.dim() == 2, **LAUNCH["dx"])
    dD = None if D is None else ddp.sum((0, 2, 3)).reshape(D.shape) if D.dim() == 2 else ddp.sum((0, 2, 3, 4))
    col = colp.sum(2)  # [b, h, L]: the block pairs' shares in a fixed order
    ddt = share + col + diag
    dacs = (dacs_state + rowp.sum(2) - col * dt.transpose(1, 2) - slast).view(batch, H, n_chunks, Q)
    dacs[..., -1] += slast.view(batch, H, n_chunks, Q).sum(-1) + ddecay  # acs_last: through S_c and the decay
    return dx, ddt.transpose(1, 2), dacs.view(batch, H, L), dB, dC, dD, dh0
