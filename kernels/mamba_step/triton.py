"""Fused Triton kernels for one Mamba-1 decode step, replacing about twenty small PyTorch ops per layer.

A decode step at small batch is bound by kernel launches, not arithmetic (hybrid/cuda_graph.py): the plain-op step
(hybrid/blocks/mamba_inference.py) runs the conv-state shift, the conv, softplus, the discretisation, the state
update, the readout, D and the gate as separate kernels. These two kernels do the same in one launch each (the
x_proj and dt_proj matmuls between them stay cuBLAS):

    conv_state_update   conv_state <- [conv_state[1:], x];  u = silu(conv_state . w + bias)
    selective_state_update
        dt = softplus(dt + dt_bias);  h <- exp(dt A) h + dt B u;  y = C.h + D u;  y *= silu(z)

One program per (batch row, block of channels); the state block stays in registers. Checked against the plain ops
(tests/inference/test_mamba_step_kernels.py; on the CPU through TRITON_INTERPRET=1).
"""
import torch
import triton
import triton.language as tl

BLOCK_D = 64


@triton.jit
def _conv_update_kernel(x_ptr, state_ptr, w_ptr, b_ptr, out_ptr, dim, s_xb, s_xd, s_sb, s_sd, s_sk, s_wd, s_wk,
                        s_ob, s_od, K: tl.constexpr, KP: tl.constexpr, HAS_BIAS: tl.constexpr,
                        BLOCK: tl.constexpr):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    k = tl.arange(0, KP)
    dmask = d < dim
    x = tl.load(x_ptr + b * s_xb + d * s_xd, mask=dmask, other=0.0)
    row = state_ptr + b * s_sb + d[:, None] * s_sd
    shifted = tl.load(row + (k[None, :] + 1) * s_sk, mask=dmask[:, None] & (k[None, :] + 1 < K), other=0.0)
    state = tl.where(k[None, :] == K - 1, x[:, None], shifted)  # [BLOCK, KP]: the last K inputs, newest last
    tl.store(row + k[None, :] * s_sk, state, mask=dmask[:, None] & (k[None, :] < K))
    w = tl.load(w_ptr + d[:, None] * s_wd + k[None, :] * s_wk, mask=dmask[:, None] & (k[None, :] < K), other=0.0)
    acc = tl.sum(state.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    u = acc / (1.0 + tl.exp(-acc))  # silu (inline: a nested jit function fails in the interpreter after some imports)
    tl.store(out_ptr + b * s_ob + d * s_od, u.to(out_ptr.dtype.element_ty), mask=dmask)


def conv_state_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
    """x [batch, dim] (the new input), conv_state [batch, dim, K] (updated in place), weight [dim, K], bias [dim]
    -> silu(conv) [batch, dim] in x's dtype."""
    batch, dim = x.shape
    K = conv_state.shape[-1]
    out = torch.empty_like(x)
    grid = (batch, triton.cdiv(dim, BLOCK_D))
    _conv_update_kernel[grid](x, conv_state, weight, bias if bias is not None else weight, out, dim,
                              x.stride(0), x.stride(1), *conv_state.stride(), *weight.stride(), *out.stride(),
                              K=K, KP=triton.next_power_of_2(K), HAS_BIAS=bias is not None, BLOCK=BLOCK_D)
    return out


@triton.jit
def _ssm_update_kernel(h_ptr, u_ptr, dt_ptr, dtb_ptr, alog_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr, dim, N,
                       s_hb, s_hd, s_hn, s_ub, s_ud, s_tb, s_td, s_ad, s_an, s_Bb, s_Bd, s_Bn, s_Cb, s_Cd, s_Cn,
                       s_zb, s_zd, s_yb, s_yd, NP: tl.constexpr, HAS_Z: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, NP)
    dmask = d < dim
    m2 = dmask[:, None] & (n[None, :] < N)
    u = tl.load(u_ptr + b * s_ub + d * s_ud, mask=dmask, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_tb + d * s_td, mask=dmask, other=0.0).to(tl.float32)
    dt += tl.load(dtb_ptr + d, mask=dmask, other=0.0)
    # softplus as torch computes it (threshold 20), log1p(e) to full precision for small e (Goldberg's trick)
    e = tl.exp(tl.minimum(dt, 20.0))
    one_e = 1.0 + e
    log1p = tl.where(one_e == 1.0, e, tl.log(one_e) * e / (one_e - 1.0))
    dt = tl.where(dt > 20.0, dt, log1p)
    A = -tl.exp(tl.load(alog_ptr + d[:, None] * s_ad + n[None, :] * s_an, mask=m2, other=0.0).to(tl.float32))
    B = tl.load(B_ptr + b * s_Bb + d[:, None] * s_Bd + n[None, :] * s_Bn, mask=m2, other=0.0).to(tl.float32)
    C = tl.load(C_ptr + b * s_Cb + d[:, None] * s_Cd + n[None, :] * s_Cn, mask=m2, other=0.0).to(tl.float32)
    h_row = h_ptr + b * s_hb + d[:, None] * s_hd + n[None, :] * s_hn
    h = tl.load(h_row, mask=m2, other=0.0)
    h = h * tl.exp(dt[:, None] * A) + (dt * u)[:, None] * B
    tl.store(h_row, h, mask=m2)
    y = tl.sum(h * C, axis=1) + tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32) * u
    if HAS_Z:
        z = tl.load(z_ptr + b * s_zb + d * s_zd, mask=dmask, other=0.0).to(tl.float32)
        y *= z / (1.0 + tl.exp(-z))
    tl.store(y_ptr + b * s_yb + d * s_yd, y.to(y_ptr.dtype.element_ty), mask=dmask)


def selective_state_update(state: torch.Tensor, u: torch.Tensor, dt: torch.Tensor, dt_bias: torch.Tensor,
                           A_log: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
                           z: torch.Tensor | None) -> torch.Tensor:
    """One step of the selective scan, the state updated in place.

    state [batch, dim, N] fp32; u, dt (before bias and softplus), z [batch, dim]; dt_bias, D [dim] fp32;
    A_log [dim, N] (A = -exp(A_log)); B, C [batch, 1, N] (selective) or [1, dim, N] (LTI). Returns y [batch, dim]
    in u's dtype."""
    batch, dim, N = state.shape
    y = torch.empty_like(u)

    def strides(t):  # broadcast: a size-1 axis has stride 0
        return tuple(st if size > 1 else 0 for st, size in zip(t.stride(), t.shape))

    zz = z if z is not None else u
    grid = (batch, triton.cdiv(dim, BLOCK_D))
    _ssm_update_kernel[grid](state, u, dt, dt_bias, A_log, B, C, D, zz, y, dim, N, *state.stride(), *u.stride(),
                             *dt.stride(), *A_log.stride(), *strides(B), *strides(C), *zz.stride(), *y.stride(),
                             NP=triton.next_power_of_2(N), HAS_Z=z is not None, BLOCK=BLOCK_D)
    return y
