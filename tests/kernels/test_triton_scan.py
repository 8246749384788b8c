"""Our Triton selective scan against the float64 sequential definition: outputs, last state, every gradient.

On a machine without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before the kernel
module is imported). The interpreter evaluates `tl.associative_scan` one element at a time in Python; the
`_vector_scan` fixture makes it fold whole slices instead (the same left-to-right fold, vectorised over the other
axes), which is ~100x faster and computes the same thing. Shapes are small and awkward, chunk sizes small so that
every sequence crosses several chunk boundaries.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest

triton = pytest.importorskip("triton")

from hybrid.bench.scan_inputs import LAYOUTS
from hybrid.kernels.selective_scan.reference import selective_scan_sequential
from hybrid.kernels.selective_scan.triton import _fwd_kernel, make_cfg, selective_scan_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# bound on ||ours - ref|| / ||ref|| (inputs rounded to the dtype first; the reference sees the same rounded values)
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@pytest.fixture(scope="module", autouse=True)
def _vector_scan():
    if not INTERPRET:
        yield
        return
    from triton.runtime import interpreter

    assert type(_fwd_kernel).__name__ == "InterpretedFunction", (
        "the Triton kernels were imported before TRITON_INTERPRET=1 was set; run this file on its own")

    def generic_scan(self, inputs):
        data = [x.handle.data for x in inputs]
        outs = [np.empty_like(d) for d in data]
        acc = None
        for i in range(data[0].shape[self.axis]):
            cur = tuple(self.to_tensor(np.take(d, i, axis=self.axis), x.dtype) for d, x in zip(data, inputs))
            if acc is None:
                acc = cur
            else:
                r = self.combine_fn.fn(*acc, *cur)
                acc = r if isinstance(r, tuple) else (r,)
            for o, a in zip(outs, acc):
                o[(slice(None),) * self.axis + (i,)] = a.handle.data
        return [self.to_tensor(o, x.dtype) for o, x in zip(outs, inputs)]

    saved = interpreter.ScanOps.generic_scan
    interpreter.ScanOps.generic_scan = generic_scan
    yield
    interpreter.ScanOps.generic_scan = saved


def make_inputs(batch, dim, L, N, dtype, seed=0, b_sel=True, c_sel=True, D=True, z=True, bias=True, h0=True):
    """Fresh random scan inputs (never zeros); u, delta, B, C, z in `dtype`, the parameters A, D, bias in fp32."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g) * scale + shift).to(dt).to(DEVICE)

    return dict(
        u=rnd(batch, dim, L), delta=rnd(batch, dim, L, scale=0.5, shift=-1.0),
        A=-torch.rand(dim, N, generator=g).mul(3).add(0.1).to(DEVICE),
        B=rnd(batch, N, L) if b_sel else rnd(dim, N, dt=torch.float32),
        C=rnd(batch, N, L) if c_sel else rnd(dim, N, dt=torch.float32),
        D=rnd(dim, dt=torch.float32) if D else None, z=rnd(batch, dim, L) if z else None,
        delta_bias=rnd(dim, scale=0.3, dt=torch.float32) if bias else None,
        initial_state=rnd(batch, dim, N, dt=torch.float32) if h0 else None)


def run(fn, inp, gy, glast, softplus=True, **kw):
    """y, last state and the gradients of <y, gy> + <last, glast> with respect to every given input."""
    inp = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inp.items()}
    y, last = fn(**inp, delta_softplus=softplus, return_last_state=True, **kw)
    given = [k for k in NAMES if inp[k] is not None]
    grads = torch.autograd.grad((y, last), [inp[k] for k in given], (gy, glast))
    return y, last, dict(zip(given, grads))


def sequential_mixed(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                     return_last_state=False, initial_state=None):
    """The definition, for one of B, C selective and the other LTI (selective_scan_sequential takes both of one
    kind): a loop over time on float64 tensors. Shapes as selective_scan_sequential."""
    delta = delta + delta_bias[:, None] if delta_bias is not None else delta
    delta = torch.nn.functional.softplus(delta) if delta_softplus else delta
    h = initial_state if initial_state is not None else u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        Bt = B[:, None, :, t] if B.dim() == 3 else B  # [batch, 1, N] or [dim, N]
        Ct = C[:, None, :, t] if C.dim() == 3 else C
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * Bt
        ys.append((h * Ct).sum(-1))
    y = torch.stack(ys, -1) + (u * D[:, None] if D is not None else 0)
    y = y * torch.nn.functional.silu(z) if z is not None else y
    return (y, h) if return_last_state else y


# tiles for the interpreter, which runs programs one after another: 8 channels per program (few programs), 2 warps
SMALL = dict(fwd_block_d=8, fwd_warps=2, bwd_block_d=8, bwd_warps=2)
# The rolled backward with prefetch (bwd_kernel=1, bwd_prefetch=1) is CONFIG's default, so every test with SMALL runs
# it; ROLLED says so where a test is about it. TABLES: the unrolled backward with register tables (the old default).
ROLLED = dict(SMALL, bwd_kernel=1)
TABLES = dict(SMALL, bwd_kernel=0, bwd_prefetch=0)


def check(batch, dim, L, N, dtype, chunk, config=SMALL, softplus=True, layout=None, **flags):
    inp = make_inputs(batch, dim, L, N, dtype, **flags)
    if layout is not None:  # the same values in another memory layout (u, delta, z, selective B and C)
        inp = {k: (layout(v) if v is not None and v.dim() == 3 and k != "initial_state" else v)
               for k, v in inp.items()}
    if not softplus:  # the step sizes must be positive without softplus, or the recurrence grows
        inp["delta"] = inp["delta"].abs()
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(batch, dim, L, generator=gen).to(dtype).to(DEVICE)
    glast = torch.randn(batch, dim, N, generator=gen).to(DEVICE)
    y, last, grads = run(selective_scan_triton, inp, gy, glast, softplus, chunk_size=chunk, config=config)
    inp64 = {k: (v.double() if v is not None else None) for k, v in inp.items()}
    ref = selective_scan_sequential if inp["B"].dim() == inp["C"].dim() else sequential_mixed
    y64, last64, grads64 = run(ref, inp64, gy.double(), glast.double(), softplus)
    assert y.dtype == dtype and last.dtype == torch.float32
    assert y.stride() == inp["u"].stride(), "y is written in u's layout"
    tol = TOL[dtype]
    errs = {"y": rel(y, y64), "last_state": rel(last, last64)}
    errs.update({"d" + k: rel(grads[k], grads64[k]) for k in grads})
    for k in grads:
        assert grads[k].dtype == inp[k].dtype and grads[k].shape == inp[k].shape, k
    bad = {k: e for k, e in errs.items() if not e < tol}
    assert not bad, f"relative error above {tol} for {dtype}: {bad} (all: {errs})"
    return grads


def rel(x, ref):
    return ((x.double() - ref).norm() / ref.norm()).item()


# (batch, dim, L, N, chunk): padded channel blocks (dim 5), padded states (N 3), tails (L 63, 37, 300)
CASES = {
    "b2-d5-L63-N16": (2, 5, 63, 16, 16),
    "b1-d64-L40-N16": (1, 64, 40, 16, 16),
    "b1-d5-L300-N1": (1, 5, 300, 1, 32),
    "b3-d5-L1-N3": (3, 5, 1, 3, 8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_shapes(case):
    batch, dim, L, N, chunk = CASES[case]
    check(batch, dim, L, N, torch.float32, chunk)


# (channels per program, warps, steps per tile) for both kernels: channels over warps, one per warp, several per
# warp, fewer channels than warps (then warps share a channel's steps)
TILES = {"d1-w1-t8": (1, 1, 8), "d4-w2-t4": (4, 2, 4), "d8-w8-t16": (8, 8, 16), "d2-w4-t32": (2, 4, 32)}


@pytest.mark.parametrize("tile", list(TILES))
def test_tile_shapes(tile):
    """Every split of the tile over threads, lanes and warps computes the same scan (dim 11: several blocks, the
    last one padded; N 5: padded states)."""
    bd, w, t = TILES[tile]
    check(2, 11, 21, 5, torch.float32, t, dict(fwd_block_d=bd, fwd_warps=w, bwd_block_d=bd, bwd_warps=w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_dtypes(dtype):
    check(2, 5, 45, 16, dtype, 16)


@pytest.mark.parametrize("dtype,half", [(torch.bfloat16, 1), (torch.float16, 1), (torch.float32, 1),
                                        (torch.bfloat16, 0)], ids=["bf16", "fp16", "fp32", "bf16-fp32partials"])
def test_half_partials(dtype, half):
    """bwd_half_partials=1 (the default): dB/dC partials kept in bf16 for bf16 B, C (fp16 and fp32 inputs keep fp32
    partials), 0: fp32; every gradient still within the dtype's bound of float64 (L 63 over 4 backward segments, then
    one launch; dim 11: two channel blocks; N 8: each partial is one state's, its rounding the same at any N)."""
    check(2, 11, 63, 8, dtype, 16, dict(SMALL, bwd_half_partials=half, bwd_segments=4))
    check(2, 11, 63, 8, dtype, 16, dict(SMALL, bwd_half_partials=half, bwd_segments=1))


@pytest.mark.parametrize("b_sel,c_sel", [(False, True), (True, False), (False, False)], ids=["ltiB", "ltiC", "lti"])
def test_lti(b_sel, c_sel):
    check(2, 5, 37, 4, torch.float32, 8, b_sel=b_sel, c_sel=c_sel)


def test_no_optional_inputs():
    """No D, z, delta_bias, initial state and no softplus: the plain recurrence."""
    check(1, 5, 37, 8, torch.float32, 8, softplus=False, D=False, z=False, bias=False, h0=False)


def test_deterministic_backward_equal_to_tables():
    """Two backward passes (the default, rolled kernel) are bitwise identical (no atomics: dB, dC partials reduced in
    a fixed order) and equal the table kernel's up to rounding."""
    inp = make_inputs(2, 8, 40, 16, torch.float32)
    gen = torch.Generator().manual_seed(3)
    gy, glast = torch.randn(2, 8, 40, generator=gen).to(DEVICE), torch.randn(2, 8, 16, generator=gen).to(DEVICE)
    _, _, g1 = run(selective_scan_triton, inp, gy, glast, chunk_size=16, config=ROLLED)
    _, _, g2 = run(selective_scan_triton, inp, gy, glast, chunk_size=16, config=ROLLED)
    _, _, g0 = run(selective_scan_triton, inp, gy, glast, chunk_size=16, config=TABLES)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), f"d{k}: two rolled backward passes differ"
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-5, msg=lambda m: f"d{k}, rolled vs tables: {m}")


@pytest.mark.parametrize("used", ["y", "last"])
def test_one_output_used(used):
    """A loss of y alone or of the last state alone (the other output's gradient is None, never a zero-filled
    tensor): every gradient against float64."""
    inp = make_inputs(2, 5, 37, 4, torch.float32)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    leaves64 = {k: v.detach().double().requires_grad_(True) for k, v in inp.items()}
    y, last = selective_scan_triton(**leaves, delta_softplus=True, return_last_state=True, chunk_size=8,
                                    config=dict(SMALL, bwd_segments=2))
    y64, last64 = selective_scan_sequential(**leaves64, delta_softplus=True, return_last_state=True)
    gen = torch.Generator().manual_seed(4)
    out, out64 = (y, y64) if used == "y" else (last, last64)
    w = torch.randn(out.shape, generator=gen).to(DEVICE)
    grads = torch.autograd.grad((out * w).sum(), list(leaves.values()), allow_unused=True)
    grads64 = torch.autograd.grad((out64 * w.double()).sum(), list(leaves64.values()), allow_unused=True)
    # the last state does not depend on C, D, z: the reference gives None, ours zeros
    errs = {k: (rel(g, g64) if g64 is not None else g.abs().max().item())
            for k, g, g64 in zip(leaves, grads, grads64)}
    assert all(e < TOL[torch.float32] for e in errs.values()), errs


def test_strided_inputs_match_contiguous():
    """Any strides are read in place: u, delta, z as slices of one [batch, 3 dim, L] tensor, B, C transposed."""
    batch, dim, L, N = 2, 5, 21, 4
    inp = make_inputs(batch, dim, L, N, torch.float32, h0=False)
    xz = torch.randn(batch, 3 * dim, L, device=DEVICE)
    BC = torch.randn(batch, L, 2 * N, device=DEVICE)
    strided = dict(inp, u=xz[:, :dim], delta=xz[:, dim:2 * dim], z=xz[:, 2 * dim:],
                   B=BC[..., :N].transpose(1, 2), C=BC[..., N:].transpose(1, 2))
    dense = {k: (v.contiguous() if v is not None else None) for k, v in strided.items()}
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    kw = dict(delta_softplus=True, return_last_state=True, chunk_size=8, config=SMALL)
    y1, l1 = selective_scan_triton(**strided, **kw)
    y2, l2 = selective_scan_triton(**dense, **kw)
    # compiled code may contract multiply-adds differently per stride specialisation: equal up to rounding there
    tol = dict(rtol=0, atol=0) if INTERPRET else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y1, y2, **tol)
    torch.testing.assert_close(l1, l2, **tol)


@pytest.mark.parametrize("L", [1, 63, 300])
@pytest.mark.parametrize("layout", ["channels_last", "block"])
def test_layouts(layout, L):
    """Every output and gradient against float64 when the inputs are strided views (dim 5, N 3: padded blocks and
    states); outputs and the u, delta, z gradients come back in u's layout."""
    grads = check(2, 5, L, 3, torch.float32, 16, layout=LAYOUTS[layout])
    u_stride = LAYOUTS[layout](torch.empty(2, 5, L)).stride()
    for k in ("u", "delta", "z"):
        assert grads[k].stride() == u_stride, k


def test_no_grad_saves_nothing_and_matches():
    inp = make_inputs(1, 5, 20, 4, torch.float32)
    with torch.no_grad():
        y = selective_scan_triton(**inp, delta_softplus=True, chunk_size=8, config=SMALL)
    y_grad = selective_scan_triton(**{k: (v.requires_grad_(True) if v is not None else None) for k, v in
                                      inp.items()}, delta_softplus=True, chunk_size=8, config=SMALL)
    assert torch.equal(y, y_grad.detach())  # one compiled forward for both: the states' store is a runtime choice
    with torch.no_grad():  # the no-grad forward keeps one scratch tile of states, not one per tile
        *_, states = torch.ops.hybrid.selective_scan_fwd(*(inp[k] for k in NAMES), True, False, make_cfg(8, SMALL))
    assert states.shape == (1, 5, 1, 4)


@pytest.mark.parametrize("bad,match", [
    (dict(u=torch.randn(2, 5)), "u must be"),
    (dict(delta=torch.randn(2, 5, 9)), "delta must have shape"),
    (dict(B=torch.randn(2, 4, 8)), "B must have shape"),
    (dict(A=torch.randn(4, 3)), "A must be"),
    (dict(u=torch.randn(2, 5, 8, dtype=torch.float64)), "u has dtype torch.float64"),
    (dict(delta=torch.randint(0, 3, (2, 5, 8))), "delta must be a floating tensor"),
    (dict(chunk_size=12), "chunk_size=12"),
    (dict(config=dict(bwd_warps=3)), "bwd_warps=3"),
    (dict(config=dict(fwd_block_d=6)), "fwd_block_d=6"),
    (dict(config=dict(block_d=32)), "unknown config keys"),
    (dict(config=dict(bwd_half_partials=2)), "bwd_half_partials=2"),
    (dict(config=dict(bwd_kernel=2)), "bwd_kernel=2"),
    (dict(config=dict(bwd_unroll=3)), "bwd_unroll=3"),
    (dict(config=dict(bwd_asm=8)), "bwd_asm=8"),
    (dict(config=dict(bwd_prefetch=2)), "bwd_prefetch=2"),
    (dict(config=dict(bwd_maxnreg=300)), "bwd_maxnreg=300"),
    (dict(config=dict(bwd_segments=-1)), "bwd_segments=-1"),
])
def test_bad_inputs(bad, match):
    args = dict(u=torch.randn(2, 5, 8), delta=torch.randn(2, 5, 8), A=-torch.rand(5, 3), B=torch.randn(2, 3, 8),
                C=torch.randn(2, 3, 8))
    args = {k: v.to(DEVICE) for k, v in args.items()}
    args.update({k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in bad.items()})
    with pytest.raises(ValueError, match=match):
        selective_scan_triton(**args)


def test_custom_op_registration():
    """The torch.library ops pass opcheck: schema, fake (meta) impl, autograd registration."""
    inp = make_inputs(1, 3, 10, 2, torch.float32, h0=True)
    args = [inp[k] for k in NAMES]
    cfg = make_cfg(4, SMALL)
    args = [a.requires_grad_(True) if a is not None else None for a in args] + [True, True, cfg]
    torch.library.opcheck(torch.ops.hybrid.selective_scan_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.skipif(DEVICE != "cuda", reason="needs a GPU: 2.3e9 elements per tensor")
def test_int64_offsets_long_sequence():
    """batch * dim * L > 2**31: the last channels of the last batch equal a run on just those channels."""
    batch, dim, L, N = 2, 1100, 2**20 + 3, 16
    inp = make_inputs(batch, dim, L, N, torch.float16, h0=False, z=False)
    y, last = selective_scan_triton(**inp, delta_softplus=True, return_last_state=True)
    tail = dict(inp, u=inp["u"][1:, -8:], delta=inp["delta"][1:, -8:], A=inp["A"][-8:], B=inp["B"][1:],
                C=inp["C"][1:], D=inp["D"][-8:], delta_bias=inp["delta_bias"][-8:])
    y_t, last_t = selective_scan_triton(**tail, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(y[1:, -8:], y_t)
    torch.testing.assert_close(last[1:, -8:], last_t)


def test_torch_compile_fullgraph():
    """torch.compile captures the op in one graph (fake impl, registered autograd) and computes the same values."""
    inp = make_inputs(1, 3, 10, 2, torch.float32, h0=False)

    def loss(u, delta, A, B, C, D, z, delta_bias):
        y = selective_scan_triton(u * 2, delta, A, B, C, D, z, delta_bias, delta_softplus=True, chunk_size=4,
                                  config=SMALL)
        return y.square().sum()

    args = [inp[k].detach().requires_grad_(True) for k in NAMES[:-1]]
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    grads = torch.autograd.grad(out, args)
    args_e = [a.detach().requires_grad_(True) for a in args]
    out_e = loss(*args_e)
    grads_e = torch.autograd.grad(out_e, args_e)
    torch.testing.assert_close(out, out_e)
    for g, ge in zip(grads, grads_e):
        torch.testing.assert_close(g, ge)


# rolled-kernel options: unrolled 1 time without loading a state ahead, 4 times (N 3: a remainder) with it (prefetch,
# unroll 1: the default, test_fp32_shapes); bwd_asm (inline PTX) runs only compiled on an NVIDIA GPU: here it must
# fall back to the Triton code and give the same result
ROLLED_OPTS = {"u1-no-prefetch": dict(bwd_unroll=1, bwd_prefetch=0), "u4": dict(bwd_unroll=4),
               "prefetch-u2-asm": dict(bwd_prefetch=1, bwd_unroll=2, bwd_asm=7)}


@pytest.mark.parametrize("case", ["b2-d5-L63-N16", "b3-d5-L1-N3"])
@pytest.mark.parametrize("opts", list(ROLLED_OPTS))
def test_rolled_backward(case, opts):
    """bwd_kernel=1 (states loop rolled, per-state carries in memory) against float64, with each option."""
    batch, dim, L, N, chunk = CASES[case]
    check(batch, dim, L, N, torch.float32, chunk, dict(ROLLED, **ROLLED_OPTS[opts]))


@pytest.mark.parametrize("case", ["b2-d5-L63-N16", "b3-d5-L1-N3"])
def test_tables_backward(case):
    """bwd_kernel=0 (states loop unrolled, per-state register tables) against float64."""
    batch, dim, L, N, chunk = CASES[case]
    check(batch, dim, L, N, torch.float32, chunk, TABLES)


# The rolled kernel's LTI, no-optional-inputs, strided-layout and 16-bit-partials cases are test_lti's,
# test_no_optional_inputs', test_layouts' and test_half_partials' (SMALL is the rolled kernel).


def test_rolled_tiles_over_segments():
    """2 channels over 4 warps (warps share a channel's steps), L 300 over 10 backward segments (automatic: partials
    within u's bytes); dim 5: three channel blocks, the last one padded."""
    check(2, 5, 300, 5, torch.float32, 32, dict(ROLLED, bwd_block_d=2, bwd_warps=4))


@pytest.mark.parametrize("kb", [1, 4])
def test_partial_sums_blocks(kb):
    """The dB/dC partials summed 1 or 4 at a time (more than the 2 channel blocks of dim 11: masked; N 8 x L 63: four
    blocks of 128 elements, the last one partial)."""
    check(2, 11, 63, 8, torch.float32, 16, dict(SMALL, bwd_sum_kb=kb))
