"""PyTorch SSD (Mamba-2's state-space dual) in mamba-ssm's `mamba_chunk_scan_combined` shapes.

`ssd_sequential` is the definition: the recurrence, a loop over time through autograd, float64-testable.
`ssd_chunked` (backend "reference") computes the same thing in the chunked matrix form of the Mamba-2 paper
(section 6): within a chunk of Q steps the output is a masked matmul (C B^T * decay * dt) x, the state each chunk
leaves is a matmul too, and only the few chunk-to-chunk state hand-offs are sequential. Autograd differentiates it;
every step is a batched matmul or an elementwise op, so it is fast on the CPU.

Shapes (b batch, L length, h heads, p head_dim, g groups, n state size; head i reads group i // (h / g)):
    x, z [b, L, h, p]   dt [b, L, h]   A, dt_bias [h]   D [h] or [h, p]   B, C [b, L, g, n]
    initial_states, final states [b, h, p, n]
The recurrence, per head, with the state h_t [p, n]:
    dt_t = clamp(softplus(dt_t + dt_bias), *dt_limit)
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        y_t = h_t C_t + D x_t        y_t *= silu(z_t)
"""
import functools
import math

import torch
import torch.nn.functional as F


def process_dt(dt, dt_bias, dt_softplus, dt_limit, acc):
    """dt [b, L, h] after bias, softplus (linear above 20, as mamba-ssm) and the (min, max) clamp, in `acc`."""
    dt = dt.to(acc)
    if dt_bias is not None:
        dt = dt + dt_bias.to(acc)
    if dt_softplus:
        dt = F.softplus(dt)  # threshold 20: dt itself above, mamba-ssm's rule
    lo, hi = dt_limit
    if lo > 0 or hi < math.inf:
        dt = dt.clamp(min=lo, max=hi)
    return dt


def _finish(y, x, D, z, acc):
    """y + D x, gated by silu(z): y, x, z [b, L, h, p]; D [h] or [h, p]."""
    if D is not None:
        Dh = D.to(acc)
        y = y + x * (Dh[:, None] if Dh.dim() == 1 else Dh)
    if z is not None:
        y = y * F.silu(z.to(acc))
    return y


def ssd_sequential(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
                   initial_states=None, return_final_states=False):
    """The SSD recurrence as a loop over time (the module docstring has the shapes and the equations).

    Returns y [b, L, h, p] in x's dtype, and with return_final_states the last state [b, h, p, n] (fp32; fp64
    for fp64 inputs)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, L, heads, head_dim = x.shape
    groups, N = B.shape[2:]
    xs = x.to(acc)
    dts = process_dt(dt, dt_bias, dt_softplus, dt_limit, acc)  # [b, L, h]
    Bh = B.to(acc).repeat_interleave(heads // groups, dim=2)  # [b, L, h, n]
    Ch = C.to(acc).repeat_interleave(heads // groups, dim=2)
    decay = torch.exp(dts * A.to(acc)).unbind(1)  # L x [b, h]
    inputs = (dts[..., None] * xs).unbind(1)  # L x [b, h, p]
    Bs, Cs = Bh.unbind(1), Ch.unbind(1)
    state = (initial_states.to(acc) if initial_states is not None
             else xs.new_zeros(batch, heads, head_dim, N))
    ys = []
    for t in range(L):
        state = decay[t][:, :, None, None] * state + inputs[t][..., None] * Bs[t][:, :, None, :]
        ys.append((state * Cs[t][:, :, None, :]).sum(-1))  # [b, h, p]
    y = _finish(torch.stack(ys, dim=1), xs, D, z, acc).to(x.dtype)
    return (y, state) if return_final_states else y


def _chunks(t, Q):
    """[b, L, ...] zero-padded to a multiple of Q and split: [b, L / Q, Q, ...]."""
    L = t.shape[1]
    pad = (-L) % Q
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], -1, Q, *t.shape[2:])


@functools.lru_cache(maxsize=16)
def _masks(Q: int, device: torch.device):
    """(above [Q, Q] j > i, on_or_above [Q, Q] j >= i) boolean masks, built once per chunk size and device."""
    above = torch.ones(Q, Q, dtype=torch.bool, device=device).triu(1)
    return above, above.logical_or(torch.eye(Q, dtype=torch.bool, device=device))


def segment_sums(da, Q):
    """seg [..., Q, Q]: seg[i, j] = da_{j+1} + ... + da_i for i >= j (0 on the diagonal), -inf above it.

    da [..., Q]: the log decay of each step. Each entry is summed over its own segment (a cumsum of the masked
    [Q, Q] matrix), never as a difference of two prefix sums: those lose about eps * |prefix| of precision, and
    through autograd their gradients cancel (the diagonal adds and subtracts the same large terms), which made dA
    wrong with large dt |A| (kernels/ssd/README). exp(seg) never sees a positive argument when da <= 0."""
    above, on_or_above = _masks(Q, da.device)
    seg = da[..., :, None].masked_fill(on_or_above, 0.0).cumsum(-2)
    return seg.masked_fill(above, -math.inf)


def ssd_chunked(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                dt_limit=(0.0, math.inf), initial_states=None, return_final_states=False):
    """The SSD of `ssd_sequential` in the chunked matrix form (chunks of `chunk_size` steps), through autograd.

    Padding past L has dt = 0 (after softplus), so it neither decays nor feeds the state: the final state is
    the state at step L. The state hand-offs run only where a state exists (an initial state, more than one chunk,
    or return_final_states): a sequence of one chunk from zero needs none. Returns y [b, L, h, p] in x's dtype
    (and the final state [b, h, p, n], fp32 or fp64).
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, L, heads, head_dim = x.shape
    groups, N = B.shape[2:]
    r = heads // groups  # heads per group: head index = group * r + j
    Q = min(chunk_size, 1 << (L - 1).bit_length())  # a sequence shorter than a chunk: one chunk of its own size
    xs = x.to(acc)
    dts = process_dt(dt, dt_bias, dt_softplus, dt_limit, acc)  # [b, L, h]
    xdt = _chunks(xs * dts[..., None], Q).unflatten(3, (groups, r))  # [b, c, Q, g, r, p]: dt_j x_j
    Bc, Cc = _chunks(B.to(acc), Q), _chunks(C.to(acc), Q)  # [b, c, Q, g, n]
    da = _chunks(dts * A.to(acc), Q).unflatten(3, (groups, r)).permute(0, 1, 3, 4, 2)  # [b, c, g, r, Q]
    decay = segment_sums(da, Q).exp()  # [b, c, g, r, Qi, Qj]: exp(da_{j+1} + ... + da_i), 0 for j > i
    # intra-chunk: y_i = sum_{j <= i} (C_i . B_j) decay_ij dt_j x_j
    CB = torch.einsum("bcign,bcjgn->bcgij", Cc, Bc)  # [b, c, g, Q, Q]
    y = torch.einsum("bcgrij,bcjgrp->bcigrp", CB[:, :, :, None] * decay, xdt)  # [b, c, Q, g, r, p]
    n_chunks = y.shape[1]
    state = None if initial_states is None else initial_states.to(acc).view(batch, groups, r, head_dim, N)
    if n_chunks > 1 or state is not None or return_final_states:
        # the state each chunk adds, as seen at its end: sum_j decay_{last, j} dt_j x_j B_j^T
        added = torch.einsum("bcjgrp,bcjgn->bcgrpn", xdt * decay[..., -1, :].permute(0, 1, 4, 2, 3)[..., None],
                             Bc)  # [b, c, g, r, p, n]
        a_in = da.cumsum(-1)  # [b, c, g, r, Q]: log decay from the chunk's start through step i
        chunk_decay = a_in[..., -1].exp()  # [b, c, g, r]
        entering = []  # the state entering each chunk (None: zero)
        for c in range(n_chunks):
            entering.append(state)
            state = added[:, c] if state is None else chunk_decay[:, c, :, :, None, None] * state + added[:, c]
        first = 0 if entering[0] is not None else 1  # a zero state contributes nothing
        if first < n_chunks:  # what the entering state contributes: exp(a_in_i) C_i h
            h_in = torch.stack(entering[first:], dim=1)  # [b, c', g, r, p, n]
            from_state = torch.einsum("bcign,bcgrpn->bcigrp", Cc[:, first:], h_in) \
                * a_in[:, first:].exp().permute(0, 1, 4, 2, 3)[..., None]
            y = torch.cat([y[:, :first], y[:, first:] + from_state], dim=1) if first else y + from_state
    y = y.reshape(batch, -1, heads, head_dim)[:, :L]
    y = _finish(y, xs, D, z, acc).to(x.dtype)
    if return_final_states:
        return y, state.reshape(batch, heads, head_dim, N)
    return y
