"""Our Triton causal depthwise conv1d (+ SiLU), forward and backward, deterministic. Shapes: reference.py.

One program per (batch, block of BD channels, block of BT steps); a tile is [channels, steps] and reads x in place
in any memory layout (steps contiguous, as the Mamba block makes it, or channels contiguous); the output and dx are
written in x's layout. Accumulation in fp32, nothing of size [batch, dim, L] kept besides x itself: the backward
recomputes the pre-activation at the K positions each dx needs (K*K multiply-adds per element, loads from cache).
dweight and dbias are written as per-(batch, step block) partials and summed by torch in a fixed order: no atomics,
bitwise repeatable. torch.library custom ops (opaque to torch.compile) with autograd registered on them.
"""
import torch
import triton
import triton.language as tl

BD, BT, WARPS = 16, 128, 4  # channels and steps per tile, warps per program


@triton.jit
def _conv_at(x_row, w_ptr, dd, s_w0, s_w1, q, dmask, L, s_xl, acc, K: tl.constexpr):
    """acc + sum_k w[:, k] x[:, q - (K-1) + k] for a [BD, BT] tile of positions q (x = 0 outside [0, L))."""
    for k in tl.static_range(K):
        w = tl.load(w_ptr + dd * s_w0 + k * s_w1, mask=dmask, other=0.0).to(tl.float32)
        p = q - (K - 1) + k
        m = dmask[:, None] & ((p >= 0) & (p < L))[None, :]
        acc += w[:, None] * tl.load(x_row + p[None, :] * s_xl, mask=m, other=0.0).to(tl.float32)
    return acc


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, L, dim, s_xb, s_xd, s_xl, s_ob, s_od, s_ol, s_w0, s_w1,
                K: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    tt = tl.program_id(2).to(tl.int64) * BT + tl.arange(0, BT)
    dmask = dd < dim
    dd64 = dd.to(tl.int64)
    x_row = x_ptr + pid_b * s_xb + dd64[:, None] * s_xd
    acc = tl.zeros((BD, BT), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + dd, mask=dmask, other=0.0).to(tl.float32)[:, None]
    acc = _conv_at(x_row, w_ptr, dd, s_w0, s_w1, tt, dmask, L, s_xl, acc, K)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    m = dmask[:, None] & (tt < L)[None, :]
    tl.store(out_ptr + pid_b * s_ob + dd64[:, None] * s_od + tt[None, :] * s_ol, acc, mask=m)


@triton.jit
def _bwd_kernel(x_ptr, w_ptr, b_ptr, g_ptr, dx_ptr, dw_ptr, db_ptr, L, dim, n_t,
                s_xb, s_xd, s_xl, s_gb, s_gd, s_gl, s_ob, s_od, s_ol, s_w0, s_w1,
                K: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_t = tl.program_id(2)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    tt = pid_t.to(tl.int64) * BT + tl.arange(0, BT)
    dmask = dd < dim
    dd64 = dd.to(tl.int64)
    x_row = x_ptr + pid_b * s_xb + dd64[:, None] * s_xd
    g_row = g_ptr + pid_b * s_gb + dd64[:, None] * s_gd
    bias = tl.load(b_ptr + dd, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else None
    part = ((pid_b * n_t + pid_t) * dim + dd64)  # [BD] row of this program's partials
    dx = tl.zeros((BD, BT), dtype=tl.float32)
    for j in tl.static_range(K):  # out[t + j] reads x[t] through weight k = K-1-j
        q = tt + j
        qm = dmask[:, None] & (q < L)[None, :]
        dpre = tl.load(g_row + q[None, :] * s_gl, mask=qm, other=0.0).to(tl.float32)
        if SILU:  # recompute the pre-activation at q: silu'(p) = s (1 + p (1 - s))
            pre = tl.zeros((BD, BT), dtype=tl.float32)
            if HAS_BIAS:
                pre += bias[:, None]
            pre = _conv_at(x_row, w_ptr, dd, s_w0, s_w1, q, dmask, L, s_xl, pre, K)
            s = tl.sigmoid(pre)
            dpre = dpre * s * (1.0 + pre * (1.0 - s))
        w = tl.load(w_ptr + dd * s_w0 + (K - 1 - j) * s_w1, mask=dmask, other=0.0).to(tl.float32)
        dx += w[:, None] * dpre
        if j == 0:  # this program's steps t: dbias and dweight partials
            if HAS_BIAS:
                tl.store(db_ptr + part, tl.sum(dpre, 1), mask=dmask)
            for k in tl.static_range(K):
                p = tt - (K - 1) + k
                m = dmask[:, None] & ((p >= 0) & (p < L))[None, :]
                xk = tl.load(x_row + p[None, :] * s_xl, mask=m, other=0.0).to(tl.float32)
                tl.store(dw_ptr + part * K + k, tl.sum(dpre * xk, 1), mask=dmask)
    m = dmask[:, None] & (tt < L)[None, :]
    tl.store(dx_ptr + pid_b * s_ob + dd64[:, None] * s_od + tt[None, :] * s_ol, dx, mask=m)


def _fwd(x, weight, bias, silu):
    batch, dim, L = x.shape
    K = weight.shape[1]
    out = torch.empty_like(x, memory_format=torch.preserve_format)
    _fwd_kernel[(batch, triton.cdiv(dim, BD), triton.cdiv(L, BT))](
        x, weight, bias, out, L, dim, *x.stride(), *out.stride(), *weight.stride(),
        K=K, BD=BD, BT=BT, HAS_BIAS=bias is not None, SILU=silu, num_warps=WARPS)
    return out


def _bwd(dout, x, weight, bias, silu):
    batch, dim, L = x.shape
    K = weight.shape[1]
    n_t = triton.cdiv(L, BT)
    dx = torch.empty_like(x, memory_format=torch.preserve_format)
    dw = torch.empty(batch, n_t, dim, K, device=x.device, dtype=torch.float32)
    db = torch.empty(batch, n_t, dim, device=x.device, dtype=torch.float32) if bias is not None else None
    _bwd_kernel[(batch, triton.cdiv(dim, BD), n_t)](
        x, weight, bias, dout, dx, dw, db, L, dim, n_t, *x.stride(), *dout.stride(), *dx.stride(),
        *weight.stride(), K=K, BD=BD, BT=BT, HAS_BIAS=bias is not None, SILU=silu, num_warps=WARPS)
    dw = dw.sum((0, 1)).to(weight.dtype)  # fixed-order reductions: deterministic
    db = db.sum((0, 1)).to(bias.dtype) if bias is not None else x.new_empty(0)
    return dx, dw, db


Tensor = torch.Tensor


@torch.library.custom_op("hybrid::causal_conv1d_fwd", mutates_args=())
def _fwd_op(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    return _fwd(x, weight, bias, silu)


@_fwd_op.register_fake
def _(x, weight, bias, silu):
    return torch.empty_like(x)


@torch.library.custom_op("hybrid::causal_conv1d_bwd", mutates_args=())
def _bwd_op(dout: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> list[Tensor]:
    return list(_bwd(dout, x, weight, bias, silu))


@_bwd_op.register_fake
def _(dout, x, weight, bias, silu):
    return [torch.empty_like(x), torch.empty_like(weight),
            torch.empty_like(bias) if bias is not None else x.new_empty(0)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, silu = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu = silu


def _backward(ctx, dout):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _bwd_op(dout, x, weight, bias, ctx.silu)
    return dx, dw, db if bias is not None else None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def causal_conv1d_triton(x, weight, bias=None, activation="silu"):
    """x: [batch, dim, L] (any strides; fp32, fp16, bf16); weight: [dim, K]; bias: [dim] or None.
    Returns act(causal depthwise conv) [batch, dim, L] in x's dtype and memory layout."""
    return _fwd_op(x, weight, bias, activation == "silu")
