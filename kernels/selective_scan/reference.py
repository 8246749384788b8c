"""PyTorch reference selective scans (mamba-ssm's shapes; state and accumulation in fp32).

`selective_scan_sequential` is the definition: a plain loop over time, differentiated by autograd. It is
slow and exists to be read and to be the ground truth of every test.
"""
import torch
import torch.nn.functional as F


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                              return_last_state=False, initial_state=None):
    """The selective scan as a loop over time.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t ;  y_t = <C_t, h_t> + D * u_t ;  y_t *= silu(z_t)

    Args:
        u, delta, z: [batch, dim, L]. A: [dim, N]. B, C: [batch, N, L] (selective) or [dim, N] (LTI).
        D, delta_bias: [dim]. initial_state: [batch, dim, N].
    Returns:
        y [batch, dim, L] in u's dtype, and the last state [batch, dim, N] (fp32) if return_last_state.
    """
    dtype_in = u.dtype
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(acc) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(acc)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    selective = B.dim() == 3
    h = (initial_state.to(acc) if initial_state is not None
         else u.new_zeros(batch, dim, A.shape[1]))  # [batch, dim, N]
    dA = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])  # [batch, dim, L, N]
    ys = []
    for t in range(L):
        Bt = B[:, None, :, t] if selective else B[None]  # [batch|1, dim|1, N]
        Ct = C[:, None, :, t] if selective else C[None]
        h = dA[:, :, t] * h + (delta[:, :, t] * u[:, :, t]).unsqueeze(-1) * Bt
        ys.append((h * Ct).sum(-1))  # [batch, dim]
    y = torch.stack(ys, dim=-1)  # [batch, dim, L]
    if D is not None:
        y = y + u * D.to(acc)[:, None]
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(dtype_in)
    return (y, h.float() if acc == torch.float32 else h) if return_last_state else y
