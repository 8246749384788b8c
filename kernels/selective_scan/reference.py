"""PyTorch reference selective scans (mamba-ssm's shapes; state and accumulation in fp32).

`selective_scan_sequential` is the definition: a plain loop over time, differentiated by autograd. It is
slow and exists to be read and to be the ground truth of every test.
`selective_scan_chunked` (backend "reference") computes the same thing fast on the CPU: chunks of time, one
fused op per step, and a hand-written backward that recomputes each chunk from its saved entry state.
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
    dA = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :]).unbind(2)  # L x [batch, dim, N]
    # per-step views by unbind: autograd then stacks their grads once, where indexing [..., t] would build
    # a full-size zero tensor per step (O(L^2) in the backward)
    dBu = (delta * u).unbind(-1)  # L x [batch, dim]
    Bs = B.unbind(-1) if selective else [B] * L  # L x [batch, N], or the LTI [dim, N]
    Cs = C.unbind(-1) if selective else [C] * L
    ys = []
    for t in range(L):
        Bt = Bs[t][:, None, :] if selective else B[None]  # [batch|1, dim|1, N]
        Ct = Cs[t][:, None, :] if selective else C[None]
        h = dA[t] * h + dBu[t].unsqueeze(-1) * Bt
        ys.append((h * Ct).sum(-1))  # [batch, dim]
    y = torch.stack(ys, dim=-1)  # [batch, dim, L]
    if D is not None:
        y = y + u * D.to(acc)[:, None]
    if z is not None:
        y = y * F.silu(z.to(acc))
    y = y.to(dtype_in)
    return (y, h.float() if acc == torch.float32 else h) if return_last_state else y


# ----------------------------------------------------------------------------------------------------------------
# The fast reference: the same recurrence, vectorised over chunks of time, with a hand-written backward.
#
# On a CPU this scan is bound by memory traffic over [L, batch, N, dim] tensors and by allocation (first touch of a
# fresh 30 MB tensor costs more than the arithmetic on it). So: every big tensor is time-major (one step is one
# contiguous [batch, N, dim] slab); the time loop is ONE fused in-place op per step (h_t += dA_t * h_{t-1}); every
# other op works on a whole chunk at once; the three chunk buffers are sized to stay in the L3 cache and are reused
# from chunk to chunk. The loop is the recurrence itself, so nothing can overflow (a closed form through
# exp(-cumsum(delta * A)) can, and an O(L^2) masked form would need a [L, L] decay matrix for each of the N * dim
# channels, since Mamba-1's A is diagonal per channel). The forward keeps only the state entering each chunk; the
# backward recomputes each chunk's states from it and runs the reverse scan for d loss / d h.
# ----------------------------------------------------------------------------------------------------------------

CHUNK_ELEMS = 1 << 20  # elements of one [chunk, batch, N, dim] buffer: 4 MB in fp32, three live at once
_LOG2E = 1.4426950408889634  # exp(a) = exp2(a * log2(e)), and torch's exp2 is about twice as fast as exp on CPU


def chunk_len_for(batch: int, dim: int, N: int, L: int) -> int:
    """Time steps per chunk: as many as fit in CHUNK_ELEMS, at least 1, at most L."""
    return max(1, min(L, CHUNK_ELEMS // max(1, batch * dim * N)))


def _time_major(t, acc):
    """[batch, C, L] (any strides, any float dtype) -> a fresh contiguous [L, batch, C] in `acc` (one copy)."""
    batch, C, L = t.shape
    return torch.empty(L, batch, C, dtype=acc, device=t.device).copy_(t.permute(2, 0, 1))


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus, acc, keep_sigmoid):
    """Time-major inputs in `acc`: u, dt (delta after bias and softplus) [L, batch, dim]; A [N, dim];
    B, C [L, batch, N] (selective) or [N, dim] (LTI); and softplus' derivative sigmoid(delta + bias)
    [L, batch, dim] when keep_sigmoid and delta_softplus (else None)."""
    dt = _time_major(delta, acc)
    if delta_bias is not None:
        dt.add_(delta_bias.to(acc))
    sig = None
    if delta_softplus:
        sig = torch.sigmoid(dt) if keep_sigmoid else None
        dt = F.softplus(dt)

    def bc(t):
        return _time_major(t, acc) if t.dim() == 3 else t.to(acc).t().contiguous()
    return _time_major(u, acc), dt, A.to(acc).t().contiguous(), bc(B), bc(C), sig


def _steps(t, c0, c1):
    """Time steps c0:c1 of a selective B or C [L, batch, N]; an LTI one [N, dim] is the same at every step."""
    return t[c0:c1] if t.dim() == 3 else t


def _per_step(t):
    """B or C of one chunk, broadcastable against [n, batch, N, dim]."""
    return t[:, :, :, None] if t.dim() == 3 else t


def _chunk_states(dt, x, A2, B, h0, dA, hs):
    """Fill dA[:n] = exp(dt_t * A) and hs[0] = h0, hs[1 + t] = h_t for the n = dt.shape[0] steps of a chunk.

    dt, x (= dt * u): [n, batch, dim]; A2 (= A * log2(e)): [N, dim]; B: [n, batch, N] or [N, dim];
    h0: [batch, N, dim]; dA: [T >= n, batch, N, dim]; hs: [T + 1, batch, N, dim].
    """
    n = dt.shape[0]
    dA_k = torch.mul(dt[:, :, None, :], A2, out=dA[:n]).exp2_()
    torch.mul(x[:, :, None, :], _per_step(B), out=hs[1:n + 1])  # dt_t * B_t * u_t
    hs[0].copy_(h0)
    h, a = hs[:n + 1].unbind(0), dA_k.unbind(0)  # per-step views, made at once (indexing each costs more)
    for t in range(n):  # the recurrence, one fused op per step
        h[t + 1].addcmul_(a[t], h[t])


class _ChunkedScan(torch.autograd.Function):
    """Inside, tensors are time-major: u, dt, x = dt * u, z and their grads [L, batch, dim]; B, C [L, batch, N]
    (selective) or [N, dim] (LTI); A [N, dim]; states [batch, N, dim]; chunk buffers [T, batch, N, dim]."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, return_last_state,
                chunk_len):
        acc = torch.float64 if u.dtype == torch.float64 else torch.float32
        batch, dim, L = u.shape
        N = A.shape[1]
        T = min(L, chunk_len or chunk_len_for(batch, dim, N, L))
        need_ddt = ctx.needs_input_grad[1] or ctx.needs_input_grad[7]
        u_t, dt, A_t, B_t, C_t, sig_dt = _prepare(u, delta, A, B, C, delta_bias, delta_softplus, acc, need_ddt)
        x, A2 = dt * u_t, A_t * _LOG2E
        h = (initial_state.to(acc).transpose(1, 2) if initial_state is not None
             else u_t.new_zeros(batch, N, dim))  # [batch, N, dim]

        starts = u_t.new_empty((L + T - 1) // T, batch, N, dim)  # the state entering each chunk
        ys = u_t.new_empty(L, batch, dim)
        dA = u_t.new_empty(T, batch, N, dim)
        hs = u_t.new_empty(T + 1, batch, N, dim)  # hs[0]: the state before the chunk; hs[1 + t]: after step t
        for k, c0 in enumerate(range(0, L, T)):
            c1 = min(c0 + T, L)
            n = c1 - c0
            starts[k].copy_(h)
            _chunk_states(dt[c0:c1], x[c0:c1], A2, _steps(B_t, c0, c1), starts[k], dA, hs)
            Ck = _steps(C_t, c0, c1)
            if Ck.dim() == 3:  # y_t = sum_n C_t[n] h_t[n]: a batched [1, N] @ [N, dim]
                torch.bmm(Ck.reshape(n * batch, 1, N), hs[1:n + 1].view(n * batch, N, dim),
                          out=ys[c0:c1].view(n * batch, 1, dim))
            else:
                torch.sum(torch.mul(hs[1:n + 1], Ck, out=dA[:n]), 2, out=ys[c0:c1])
            h = hs[n]
        last = h.transpose(1, 2).contiguous()  # [batch, dim, N], no longer a view of the buffer

        y_t = ys if D is None else ys.addcmul_(u_t, D.to(acc))  # [L, batch, dim], before the gate
        z_t = _time_major(z, acc) if z is not None else None
        out = F.silu(z_t).mul_(y_t) if z is not None else y_t
        ctx.save_for_backward(u_t, dt, A_t, B_t, C_t, D, z_t, starts, y_t if z is not None else None, sig_dt)
        ctx.T, ctx.has_bias = T, delta_bias is not None
        ctx.dtypes = [t.dtype if t is not None else None
                      for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
        ctx.set_materialize_grads(False)
        out = out.permute(1, 2, 0).contiguous().to(u.dtype)  # [batch, dim, L]
        return (out, last) if return_last_state else out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u_t, dt, A_t, B_t, C_t, D, z_t, starts, y_t, sig_dt = ctx.saved_tensors
        acc, T = u_t.dtype, ctx.T
        L, batch, dim = u_t.shape
        N = A_t.shape[0]
        selective = B_t.dim() == 3
        need_dA, need_dB, need_dC = ctx.needs_input_grad[2:5]
        gy = _time_major(dout, acc) if dout is not None else u_t.new_zeros(L, batch, dim)  # d loss / d out
        dz = dD = du = None
        if z_t is not None:
            sig = torch.sigmoid(z_t)
            dsilu = torch.sub(1, sig).mul_(z_t).add_(1).mul_(sig)  # silu'(z) = sig(z) * (1 + z * (1 - sig(z)))
            dz = torch.mul(gy, y_t).mul_(dsilu)
            gy.mul_(sig).mul_(z_t)  # now d loss / d (scan output + D u)
        if D is not None:
            dD = (gy * u_t).sum((0, 1))
            du = gy * D.to(acc)
        x, A2 = dt * u_t, A_t * _LOG2E

        dA = u_t.new_empty(T, batch, N, dim)
        hs = u_t.new_empty(T + 1, batch, N, dim)
        G = u_t.new_empty(T, batch, N, dim)  # d loss / d h_t within the chunk
        dx, ddt = u_t.new_empty(L, batch, dim), u_t.new_empty(L, batch, dim)
        dA_sum = u_t.new_zeros(N, dim)
        dB = u_t.new_empty(L, batch, N) if selective else u_t.new_zeros(N, dim)
        dC = u_t.new_empty(L, batch, N) if selective else u_t.new_zeros(N, dim)
        # d loss / d (the state after the chunk being done), carried backwards from chunk to chunk
        carry = dlast.to(acc).transpose(1, 2) if dlast is not None else None
        for k in reversed(range(starts.shape[0])):
            c0 = k * T
            c1 = min(c0 + T, L)
            n = c1 - c0
            Bk, Ck = _steps(B_t, c0, c1), _steps(C_t, c0, c1)
            _chunk_states(dt[c0:c1], x[c0:c1], A2, Bk, starts[k], dA, hs)
            dA_k, G_k, gy_k = dA[:n], G[:n], gy[c0:c1]
            # dC = sum over dim (selective; over time, batch, too for LTI) of gy * h; G is scratch until the scan
            if need_dC:
                prod = torch.mul(hs[1:n + 1], gy_k[:, :, None, :], out=G_k)
                if selective:
                    torch.sum(prod, -1, out=dC[c0:c1])
                else:
                    dC += prod.sum((0, 1))
            # the reverse scan: G_t = C_t gy_t + dA_{t+1} G_{t+1}
            torch.mul(gy_k[:, :, None, :], _per_step(Ck), out=G_k)
            if carry is not None:
                G_k[n - 1] += carry
            g, a = G_k.unbind(0), dA_k.unbind(0)
            for t in range(n - 2, -1, -1):
                g[t].addcmul_(a[t + 1], g[t + 1])
            carry = dA_k[0] * G_k[0]
            # Q_t = G_t * dA_t * h_{t-1} = d loss / d (dt_t * A), into dA's buffer; then hs is scratch
            Q = dA_k.mul_(G_k).mul_(hs[:n])
            scratch = hs[1:n + 1]
            # G_t is also d loss / d (dt_t B_t u_t): dB, and d loss / d x
            if need_dB:
                prod = torch.mul(G_k, x[c0:c1, :, None, :], out=scratch)
                if selective:
                    torch.sum(prod, -1, out=dB[c0:c1])
                else:
                    dB += prod.sum((0, 1))
            if selective:
                torch.bmm(Bk.reshape(n * batch, 1, N), G_k.view(n * batch, N, dim),
                          out=dx[c0:c1].view(n * batch, 1, dim))
            else:
                torch.sum(torch.mul(G_k, Bk, out=scratch), 2, out=dx[c0:c1])
            torch.sum(torch.mul(Q, A_t, out=scratch), 2, out=ddt[c0:c1])
            if need_dA:
                dA_sum += torch.mul(Q, dt[c0:c1, :, None, :], out=G_k).sum((0, 1))
        ddt.addcmul_(dx, u_t)  # x = dt * u
        du = dx.mul_(dt) if du is None else du.addcmul_(dx, dt)
        if sig_dt is not None:
            ddt.mul_(sig_dt)  # softplus'(r) = sigmoid(r)
        ddelta_bias = ddt.sum((0, 1)) if ctx.has_bias else None
        dinit = carry.transpose(1, 2) if ctx.dtypes[8] is not None else None  # [batch, dim, N]

        def back(g, dtype):  # time-major [L, batch, C] -> [batch, C, L]; [N, dim] -> [dim, N]; in the input's dtype
            if g is not None and g.dim() > 1:
                g = g.permute(1, 2, 0) if g.dim() == 3 else g.t()
            return g.to(dtype) if g is not None else None
        grads = (du, ddt, dA_sum, dB, dC, dD, dz, ddelta_bias, dinit)  # in forward's argument order
        grads = [None if not ctx.needs_input_grad[i] else back(g, dtype) if i != 8 else g.to(dtype)
                 for i, (g, dtype) in enumerate(zip(grads, ctx.dtypes))]
        return (*grads, None, None, None)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, initial_state=None, *, chunk_len=None):
    """The selective scan of `selective_scan_sequential`, fast on the CPU, with a hand-written backward.

    Args:
        u, delta, z: [batch, dim, L]. A: [dim, N]. B, C: [batch, N, L] (selective) or [dim, N] (LTI).
        D, delta_bias: [dim]. initial_state: [batch, dim, N].
        chunk_len: time steps per chunk (default: chunk_len_for(...), sized for the cache).
    Returns:
        y [batch, dim, L] in u's dtype, and the last state [batch, dim, N] (fp32; fp64 for fp64 inputs) if
        return_last_state.
    """
    if u.shape[-1] < 1:
        raise ValueError(f"the sequence is empty: u has shape {tuple(u.shape)}; L must be at least 1")
    if chunk_len is not None and chunk_len < 1:
        raise ValueError(f"chunk_len must be a positive number of time steps; got {chunk_len}")
    return _ChunkedScan.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                              return_last_state, chunk_len)
