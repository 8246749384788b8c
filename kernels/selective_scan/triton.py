"""Our Triton selective scan (Mamba-1), forward and backward, deterministic. Design notes: README.md beside this.

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t ;  y_t = <C_t, h_t> + D u_t ;  y_t *= silu(z_t)

One program per (batch, block of channels) walks the sequence in tiles of `chunk` steps. A tile is [channels, steps]:
the compiler lays the steps along the lanes of a warp (several consecutive steps per thread) and the channels over
the warps, so one tile's recurrence is a time-parallel `tl.associative_scan` across the lanes, and thousands of
independent scans are in flight. The states are visited one at a time inside a tile (an unrolled loop over N), their
carries between tiles kept in registers. The forward saves the state entering every tile
([batch, dim, n_tiles, N] fp32); the backward walks the tiles in reverse, recomputes each state's scan from that and
reverse-scans its gradient, in `bwd_segments` launches along the sequence. dB, dC (sums over channels) are written as
per-block partials and reduced in a fixed order: no atomics, bitwise repeatable.
The kernels are in triton_kernels.py; this file: launchers -> torch.library custom ops (+ autograd) -> public function.
"""
import os

import torch
import triton

from hybrid.kernels.selective_scan.triton_kernels import (  # noqa: F401 - exp_throughput_kernel: for the bench
    _bwd_kernel,
    _fwd_kernel,
    _sum_partials_kernel,
    exp_throughput_kernel,
)
from hybrid.kernels.selective_scan.triton_bwd_rolled import _bwd_rolled_kernel

# Tile shapes (README "Tiles"). chunk: steps per tile = steps between saved states (both kernels). *_block_d:
# channels per program; *_warps: warps per program; bwd_segments: backward launches along the sequence (each holds
# the dB/dC partials of its segment only: peak memory), 0: chosen by _n_segments (the fewest whose partials fit in
# u's bytes); bwd_half_partials: 1 keeps the dB/dC partials of bf16 B/C in bf16 (half the memory, so half
# the launches; 4-6% faster from 4K on the H100, dB/dC 2.9e-3 from fp32 vs 2.4e-3), 0 in fp32; bwd_sum_kb: partials
# loaded at once by their fixed-order sum (1: one at a time, as before session 4).
# bwd_kernel: 0 the backward with per-state register tables and the states loop unrolled (triton_kernels.py), 1 the
# rolled one (triton_bwd_rolled.py: per-state values in memory, fewer registers), unrolled bwd_unroll times;
# bwd_prefetch (bwd_kernel=1): 1 issues each state's loads one state ahead; bwd_asm (bwd_kernel=1): inline PTX where
# the default tile applies (see _bwd), bits 1: dB/dC channel sums, 2: the reverse scan, 4: the forward recomputation's
# scan (7: all); bwd_maxnreg: 0, or a cap on the backward's registers per thread (ptxas .maxnreg: more programs per
# SM, may spill).
# Defaults: the tiles of the H100 sweep (bench/results/scan_h100_notes.md); the backward of the H100's variants
# (bench/results/scan_bwd_variants_h100.json, session 5 call A, checked on the GPU): rolled with prefetch, all inline
# PTX, 128 registers, 16-bit partials: fwd+bwd 4.21 / 16.21 ms at L 4K / 16K (asm 7, cap 128, 8 launches) and 15.64
# at 16K, 62.48 at 64K with 16-bit partials, vs 6.68 / 25.36 / 99.51 for session 4's default (rolled, prefetch, fp32,
# 8 launches); at 1K the launches count most (1 launch 1.06 ms, 8 launches 2.0), hence bwd_segments=0.
CONFIG = dict(chunk=32, fwd_block_d=8, fwd_warps=1, bwd_block_d=8, bwd_warps=1, bwd_segments=0, bwd_half_partials=1,
              bwd_kernel=1, bwd_unroll=1, bwd_prefetch=1, bwd_asm=7, bwd_maxnreg=128, bwd_sum_kb=32)
_KEYS = tuple(CONFIG)


# ----------------------------------------------------------------------------------------------------------------
# launchers

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _bc_strides(X: torch.Tensor) -> tuple[int, int, int]:
    """(batch, N, L) strides of a selective B/C [batch, N, L], or (0, dim, N) strides of an LTI one [dim, N]."""
    return tuple(X.stride()) if X.dim() == 3 else (0, X.stride(0), X.stride(1))


def _like_u(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An empty [batch, dim, L] tensor in u's memory layout (steps contiguous when u's are, as the Mamba block makes
    them), so outputs and gradients are written in the layout the caller reads next, with no copy."""
    return torch.empty_like(u, dtype=dtype, memory_format=torch.preserve_format)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)  # triton.cdiv goes through Triton's JIT-function call wrapper: ~us per call from Python


def _sum_partials(p: torch.Tensor, out: torch.Tensor, q: torch.Tensor | None, out2: torch.Tensor | None,
                  KB: int) -> None:
    """out [batch, N, L] (any dtype and strides) = p [batch, n_part, N, >= L] partials summed over n_part in a fixed
    order, KB partials loaded at once; out2 from q the same way (q, out2 may be None), in the same launch."""
    batch, N, L = out.shape
    BLOCK = 128
    q, out2, two = (p, out, 1) if q is None else (q, out2, 2)
    _sum_partials_kernel[(batch, _cdiv(N * L, BLOCK), two)](
        p, out, q, out2, p.shape[1], L, N * L, *p.stride()[:3], *out.stride(), *q.stride()[:3], *out2.stride(),
        BLOCK=BLOCK, KB=KB)


def _fast_exp(x: torch.Tensor) -> bool:
    # inline PTX only where the kernels are compiled for an NVIDIA GPU (not in the interpreter)
    return x.is_cuda and torch.version.hip is None and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


def _fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_states, cfg):
    """Launch the forward (cfg: CONFIG's values in its key order). Returns y [batch, dim, L] (u's dtype), last state
    [batch, dim, N] fp32 and the states entering every tile of `chunk` steps [batch, dim, n_tiles, N] fp32 (unless
    save_states: then [batch, dim, 1, N], scratch)."""
    c = dict(zip(_KEYS, cfg))
    batch, dim, L = u.shape
    N = A.shape[1]
    T = c["chunk"]
    n_tiles = _cdiv(L, T)
    y = _like_u(u, u.dtype)
    last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)
    # the states entering every tile (for the backward), or one scratch tile the kernel overwrites (no-grad)
    states = torch.empty(batch, dim, n_tiles if save_states else 1, N, device=u.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    zz = z if z is not None else u  # dummy pointer when absent (never read)
    BD = c["fwd_block_d"]
    _fwd_kernel[(batch, _cdiv(dim, BD))](
        u, delta, A, B, C, D, zz, delta_bias, h0, y, last, states, L, dim, n_tiles, states.shape[2], int(save_states),
        *u.stride(), *delta.stride(), *zz.stride(), *y.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        N=N, WS=max(T, triton.next_power_of_2(N)), BD=BD, T=T, B_SEL=B.dim() == 3, C_SEL=C.dim() == 3,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, HAS_H0=h0 is not None,
        SOFTPLUS=delta_softplus, FAST_EXP=_fast_exp(u), num_warps=c["fwd_warps"])
    return y, last, states


def _n_segments(c: dict, n_tiles: int, L: int, dim: int, n_blk: int, N: int, n_sel: int, part_bytes: int,
                u_bytes: int) -> int:
    """Backward launches along the sequence: c["bwd_segments"], or (0, automatic) the fewest whose dB/dC partials
    (n_sel selective ones, [batch, n_blk, N, segment steps] each) take at most the bytes of u [batch, dim, L]. Fewer
    launches cost less at short L (each ~0.1 ms of host time: at L 1K on an H100, 1 launch took 1.06 ms fwd+bwd,
    8 launches 2.0); the bound keeps the peak memory within ~1.2x mamba-ssm's (bf16, N 16, 8 channels a program:
    4 launches with 16-bit partials, 8 with fp32)."""
    if c["bwd_segments"] or n_sel == 0:
        return min(n_tiles, c["bwd_segments"] or 1)
    max_steps = dim * L * u_bytes // (n_sel * n_blk * N * part_bytes)
    return _cdiv(n_tiles, max(1, max_steps // c["chunk"]))


def _bwd(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, cfg):
    """Launch the backward and reduce the partials in a fixed order. Returns the gradients of
    (u, delta, A, B, C, D, z, delta_bias, initial_state), each in its input's dtype; D, z, delta_bias get an
    empty tensor when absent. The initial-state gradient is fp32 [batch, dim, N]."""
    c = dict(zip(_KEYS, cfg))
    batch, dim, L = u.shape
    N = A.shape[1]
    T = c["chunk"]
    n_tiles = _cdiv(L, T)
    assert states.shape == (batch, dim, n_tiles, N), "saved tile states do not match the chunk size"
    BD = c["bwd_block_d"]
    n_blk = _cdiv(dim, BD)
    b_sel, c_sel = B.dim() == 3, C.dim() == 3
    # 16-bit partials for bf16 B and C only: fp16's range (a partial sums 8 channels, and fp16 training scales the
    # gradients up to overflow on purpose) could turn a partial into inf where the whole sum is finite
    half = bool(c["bwd_half_partials"]) and b_sel and c_sel and B.dtype == C.dtype == torch.bfloat16
    part_dtype = B.dtype if half else torch.float32
    # the sequence in segments of whole tiles, one launch each from the last: the dB/dC partials hold one segment
    # ([batch, n_blk, N, seg_len]), the state gradient at a segment's start feeds the segment before it
    n_seg = _n_segments(c, n_tiles, L, dim, n_blk, N, b_sel + c_sel, 2 if half else 4, u.element_size())
    seg_tiles = _cdiv(n_tiles, n_seg)
    n_seg = _cdiv(n_tiles, seg_tiles)
    seg_len = seg_tiles * T
    f32 = dict(device=u.device, dtype=torch.float32)
    du = _like_u(u, u.dtype)
    ddelta = _like_u(u, delta.dtype)
    dz = _like_u(u, z.dtype) if z is not None else u.new_empty(0)
    dB = torch.empty_like(B, memory_format=torch.preserve_format)
    dC = torch.empty_like(C, memory_format=torch.preserve_format)
    dA = torch.empty(n_seg, batch, dim, N, **f32)  # per-segment, per-batch partials
    dBp = (torch.empty(batch, n_blk, N, seg_len, device=u.device, dtype=part_dtype) if b_sel
           else torch.empty(n_seg, batch, dim, N, **f32))
    dCp = (torch.empty(batch, n_blk, N, seg_len, device=u.device, dtype=part_dtype) if c_sel
           else torch.empty(n_seg, batch, dim, N, **f32))
    dD = torch.empty(n_seg, batch, dim, **f32) if D is not None else None
    dbias = torch.empty(n_seg, batch, dim, **f32) if delta_bias is not None else None
    carry = [torch.empty(batch, dim, N, **f32) for _ in range(min(n_seg, 2))]  # state gradients, double-buffered
    # per-segment views made once (each tensor index is a few us of host time, which short L pays per launch)
    per_seg = lambda t: t.unbind(0) if t is not None else [None] * n_seg
    dA_s, dD_s, dbias_s = per_seg(dA), per_seg(dD), per_seg(dbias)
    dBp_s = [dBp] * n_seg if b_sel else per_seg(dBp)
    dCp_s = [dCp] * n_seg if c_sel else per_seg(dCp)
    dB_s = dB.split(seg_len, -1) if b_sel else None
    dC_s = dC.split(seg_len, -1) if c_sel else None
    # bwd_asm: inline PTX (bits 1: dB/dC channel sums, 2: the state gradient's reverse scan, 4: the recomputed
    # states' scan) that assumes the tile layout 16-bit loads with contiguous steps get on [8, 32] tiles and one
    # warp; anywhere else Triton's code
    seq = [t for t in (u, delta, z, dy, B, C) if t is not None and t.dim() == 3]
    asm = bool(c["bwd_asm"] and _fast_exp(u) and (BD, T, c["bwd_warps"]) == (8, 32, 1) and dim % BD == 0
               and all(t.dtype in (torch.float16, torch.bfloat16) and t.stride(-1) == 1 for t in seq))
    zz = z if z is not None else u
    kernel, extra = ((_bwd_rolled_kernel, dict(UNROLL=c["bwd_unroll"], PREFETCH=bool(c["bwd_prefetch"]),
                                                ASM_SUM=asm and bool(c["bwd_asm"] & 1),
                                                ASM_SCAN=asm and bool(c["bwd_asm"] & 2),
                                                ASM_FWD=asm and bool(c["bwd_asm"] & 4)))
                     if c["bwd_kernel"] else (_bwd_kernel, {}))
    if c["bwd_maxnreg"] and _fast_exp(u):  # a ptxas option: NVIDIA builds only
        extra["maxnreg"] = c["bwd_maxnreg"]
    strides = (*u.stride(), *delta.stride(), *zz.stride(), *dy.stride(), *du.stride(), *A.stride(), *_bc_strides(B),
               *_bc_strides(C))
    consts = dict(N=N, WS=max(T, triton.next_power_of_2(N)), BD=BD, T=T, B_SEL=b_sel, C_SEL=c_sel,
                  HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                  SOFTPLUS=delta_softplus, FAST_EXP=_fast_exp(u), HALF_PARTIALS=half, num_warps=c["bwd_warps"],
                  **extra)
    grid = (batch, n_blk)
    g_in = dlast
    for s in range(n_seg - 1, -1, -1):
        c0 = s * seg_tiles
        count = min(n_tiles, c0 + seg_tiles) - c0
        dh0 = carry[s % 2]
        kernel[grid](u, delta, A, B, C, D, zz, delta_bias, states, dy, g_in, du, ddelta, dz if z is not None else du,
                     dA_s[s], dBp_s[s], dCp_s[s], dD_s[s], dbias_s[s], dh0, L, dim, n_tiles, c0, count, seg_len,
                     *strides, HAS_DLAST=g_in is not None, **consts)
        if b_sel or c_sel:  # this segment's dB, dC: fixed-order sums of the partials (deterministic), one launch
            if b_sel:
                _sum_partials(dBp, dB_s[s], dCp if c_sel else None, dC_s[s] if c_sel else None, c["bwd_sum_kb"])
            else:
                _sum_partials(dCp, dC_s[s], None, None, c["bwd_sum_kb"])
        g_in = dh0
    if not b_sel:
        dB = dBp.sum((0, 1)).to(B.dtype)  # [dim, N]
    if not c_sel:
        dC = dCp.sum((0, 1)).to(C.dtype)
    return (du, ddelta, dA.sum((0, 1)).to(A.dtype), dB, dC,
            dD.sum((0, 1)).to(D.dtype) if D is not None else u.new_empty(0), dz,
            dbias.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else u.new_empty(0), g_in)


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
    n_states = (L + cfg[0] - 1) // cfg[0] if save_states else 1
    return (torch.empty_like(u), u.new_empty(batch, dim, N, dtype=torch.float32),
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
    return [torch.empty_like(u), torch.empty_like(u, dtype=delta.dtype), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), torch.empty_like(D) if D is not None else u.new_empty(0),
            torch.empty_like(u, dtype=z.dtype) if z is not None else u.new_empty(0),
            torch.empty_like(delta_bias) if delta_bias is not None else u.new_empty(0),
            u.new_empty(batch, dim, N, dtype=torch.float32)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, save_states, cfg = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.cfg = (softplus, cfg)
    ctx.saved = save_states
    ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
    ctx.mark_non_differentiable(output[2])
    # no zero-filled gradients for outputs nobody used: the saved states' would be a [batch, dim, L / chunk, N] fp32
    # tensor (as large as u in 16 bits: 2 GiB at the bench's L = 64K), the last state's a memset and HAS_DLAST
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, dlast, _dstates):
    if not ctx.saved:
        raise RuntimeError("selective_scan_triton: backward through a forward that ran without saving chunk "
                           "states (inputs did not require grad, or grad mode was off)")
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    if dy is None:  # only the last state was used
        dy = torch.zeros_like(u)
    g = _bwd_op(dy, dlast, u, delta, A, B, C, D, z, delta_bias, states, *ctx.cfg)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = g
    return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            dbias if delta_bias is not None else None, dh0.to(ctx.h0_dtype) if ctx.h0_dtype is not None else None,
            None, None, None)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# public function


_CHECKED: dict = {}  # make_cfg's answers: a call costs ~10 us of host time otherwise, paid by every forward


def make_cfg(chunk_size=None, config=None) -> list[int]:
    """CONFIG updated by `config` (a dict with some of its keys) and chunk_size, checked, as the ops' int list."""
    key = (chunk_size, tuple(CONFIG.items()), tuple(config.items()) if config else ())
    try:
        return list(_CHECKED[key])
    except (KeyError, TypeError):  # not seen yet, or unhashable values (checked below)
        pass
    c = dict(CONFIG, **(config or {}))
    unknown = set(c) - set(_KEYS)
    if unknown:
        raise ValueError(f"selective_scan_triton: unknown config keys {sorted(unknown)}; allowed: {list(_KEYS)}")
    if chunk_size is not None:
        c["chunk"] = chunk_size
    for k, v in c.items():
        if k == "bwd_asm":
            if v not in range(8):
                raise ValueError(f"selective_scan_triton: bwd_asm={v}; allowed: 0..7 (bits: 1 dB/dC channel sums, "
                                 f"2 the reverse scan, 4 the forward recomputation's scan)")
        elif k in ("bwd_half_partials", "bwd_kernel", "bwd_prefetch"):
            if v not in (0, 1):
                raise ValueError(f"selective_scan_triton: {k}={v}; allowed: 0 or 1")
        elif k == "bwd_maxnreg":
            if v != 0 and not 24 <= v <= 255:
                raise ValueError(f"selective_scan_triton: bwd_maxnreg={v}; allowed: 0 (no cap) or 24..255")
        elif k == "bwd_segments":
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"selective_scan_triton: bwd_segments={v}; allowed: 0 (chosen by L and memory) or a "
                                 f"number of launches >= 1")
        elif v < 1 or v & (v - 1):
            raise ValueError(f"selective_scan_triton: {'chunk_size' if k == 'chunk' else k}={v}; "
                             f"allowed: a power of two")
    cfg = [int(c[k]) for k in _KEYS]
    try:
        _CHECKED[key] = tuple(cfg)
    except TypeError:
        pass
    return cfg


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
        chunk_size: steps per tile = steps between saved states (a power of two; CONFIG["chunk"] when None).
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
