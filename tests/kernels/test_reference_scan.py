"""`selective_scan_chunked` (the fast CPU reference) against `selective_scan_sequential` (the definition).

Every comparison is on fresh random inputs, by relative error, against the sequential loop run in float64 on the
same (already rounded) inputs; gradients also by gradcheck and against autograd through the sequential loop.
"""
import importlib

import pytest
import torch

from hybrid.kernels.selective_scan.reference import chunk_len_for, selective_scan_chunked, selective_scan_sequential

reference_module = importlib.import_module("hybrid.kernels.selective_scan.reference")

F64 = torch.float64
# relative error of y (and of the fp32 last state) allowed for each input dtype; fp32 at 1e-5 because a negative
# delta (delta_bias without softplus) makes the state grow, and exp2(delta * A * log2 e) rounds A * log2 e once
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}

OPTIONS = {  # readable ids -> which optional inputs and flags a case uses
    "plain": {},
    "D": {"D": True},
    "z": {"z": True},
    "delta_bias": {"delta_bias": True},
    "softplus": {"delta_softplus": True},
    "lti": {"lti": True},
    "initial_state": {"initial_state": True},
    "all": {"D": True, "z": True, "delta_bias": True, "delta_softplus": True, "initial_state": True},
    "all_lti": {"D": True, "z": True, "delta_bias": True, "delta_softplus": True, "initial_state": True,
                "lti": True},
}


def make_inputs(batch, dim, L, N, opts=None, dtype=torch.float32, seed=0, delta_scale=0.5, A_max=2.0):
    """A dict of scan inputs (mamba-ssm shapes, see reference.py), random, with the options named in `opts`
    (a dict like OPTIONS' values). delta is |normal| * delta_scale (or normal when softplus follows); A in
    [-A_max, -0.1]."""
    g = torch.Generator().manual_seed(seed)
    opts = opts or {}

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)
    softplus = opts.get("delta_softplus", False)
    delta = torch.randn(batch, dim, L, generator=g, dtype=F64) * delta_scale
    x = {
        "u": rnd(batch, dim, L),
        "delta": (delta if softplus else delta.abs()).to(dtype),
        "A": (-0.1 - (A_max - 0.1) * torch.rand(dim, N, generator=g, dtype=F64)).to(dtype),
        "B": rnd(dim, N) if opts.get("lti") else rnd(batch, N, L),
        "C": rnd(dim, N) if opts.get("lti") else rnd(batch, N, L),
        "D": rnd(dim) if opts.get("D") else None,
        "z": rnd(batch, dim, L) if opts.get("z") else None,
        "delta_bias": rnd(dim, scale=0.3) if opts.get("delta_bias") else None,
        "initial_state": rnd(batch, dim, N) if opts.get("initial_state") else None,
    }
    return x, softplus


def run(fn, x, softplus, last=True, **kw):
    return fn(**x, delta_softplus=softplus, return_last_state=last, **kw)


def reference(x, softplus):
    """The sequential loop in float64 on the same inputs: (y, last_state)."""
    return run(selective_scan_sequential, {k: v.to(F64) if v is not None else None for k, v in x.items()}, softplus)


def rel(a, b):
    return ((a.to(F64) - b.to(F64)).norm() / b.to(F64).norm()).item()


def grads(fn, x, softplus, seed=1, **kw):
    """Gradients of sum(y * gy) + sum(last * gl) with respect to every given input, for fixed random gy, gl."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    y, last = run(fn, {**x, **leaves}, softplus, **kw)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=F64).to(y.dtype)
    gl = torch.randn(last.shape, generator=g, dtype=F64).to(last.dtype)
    loss = (y.to(F64) * gy).sum() + (last.to(F64) * gl).sum()
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


SHAPES = [(1, 5, 1, 1), (3, 5, 63, 16), (2, 4, 300, 3), (1, 3, 17, 1)]  # (batch, dim, L, N)


@pytest.mark.parametrize("opt", OPTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_d{}_L{}_N{}".format(*s))
def test_forward_matches_sequential_fp32(shape, opt):
    x, sp = make_inputs(*shape, OPTIONS[opt], seed=100 * SHAPES.index(shape) + list(OPTIONS).index(opt))
    y_ref, last_ref = reference(x, sp)
    for chunk_len in (None, 7):  # 7: chunk boundaries crossed many times at L=63, 300
        y, last = run(selective_scan_chunked, x, sp, chunk_len=chunk_len)
        assert y.dtype == torch.float32 and y.shape == shape[:2] + shape[2:3] and y.is_contiguous()
        assert last.dtype == torch.float32 and last.shape == (shape[0], shape[1], shape[3])
        assert rel(y, y_ref) < TOL[torch.float32], (chunk_len, rel(y, y_ref))
        assert rel(last, last_ref) < TOL[torch.float32], (chunk_len, rel(last, last_ref))


@pytest.mark.parametrize("opt", ["plain", "all", "all_lti"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_forward_low_precision_inputs(dtype, opt):
    x, sp = make_inputs(3, 6, 40, 4, OPTIONS[opt], dtype=dtype, seed=3)
    y_ref, last_ref = reference(x, sp)
    y, last = run(selective_scan_chunked, x, sp, chunk_len=9)
    assert y.dtype == dtype and last.dtype == torch.float32  # state kept in fp32 whatever the input
    assert rel(y, y_ref) < TOL[dtype], rel(y, y_ref)
    assert rel(last, last_ref) < TOL[torch.float32], rel(last, last_ref)


@pytest.mark.parametrize("opt", OPTIONS)
def test_chunked_equals_sequential_float64_any_chunk(opt):
    x, sp = make_inputs(2, 3, 23, 4, OPTIONS[opt], dtype=F64, seed=5)
    y_ref, last_ref = reference(x, sp)
    for chunk_len in (1, 2, 5, 22, 23, 100, None):
        y, last = run(selective_scan_chunked, x, sp, chunk_len=chunk_len)
        assert y.dtype == F64 and last.dtype == F64
        assert rel(y, y_ref) < TOL[F64] and rel(last, last_ref) < TOL[F64], chunk_len


@pytest.mark.parametrize("opt", ["plain", "all", "all_lti"])
def test_gradcheck_float64(opt):
    x, sp = make_inputs(2, 3, 5, 2, OPTIONS[opt], dtype=F64, seed=7)
    names = [k for k, v in x.items() if v is not None]

    def f(*tensors):
        return run(selective_scan_chunked, {**x, **dict(zip(names, tensors))}, sp, chunk_len=2)
    inputs = [x[k].clone().requires_grad_() for k in names]
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("opt", ["all", "all_lti", "plain", "D", "delta_bias"])
@pytest.mark.parametrize("shape", [(3, 5, 63, 16), (2, 4, 100, 3)], ids=lambda s: "b{}_d{}_L{}_N{}".format(*s))
def test_grads_fp32_match_sequential_autograd(shape, opt):
    x, sp = make_inputs(*shape, OPTIONS[opt], seed=11)
    want = grads(selective_scan_sequential, {k: v.to(F64) if v is not None else None for k, v in x.items()}, sp)
    got = grads(selective_scan_chunked, x, sp, chunk_len=10)
    seq32 = grads(selective_scan_sequential, x, sp)  # autograd through the loop at fp32: the same error scale
    for name in want:
        assert got[name].dtype == x[name].dtype and got[name].shape == x[name].shape, name
        assert rel(got[name], want[name]) < max(1e-5, 4 * rel(seq32[name], want[name])), name


def test_default_chunk_length(monkeypatch):
    """The default chunk fills CHUNK_ELEMS; with a small budget the default path crosses chunk boundaries too."""
    assert chunk_len_for(64, 128, 16, 64) == reference_module.CHUNK_ELEMS // (64 * 128 * 16)
    assert chunk_len_for(1, 2, 1, 5) == 5 and chunk_len_for(64, 4096, 64, 9) == 1
    monkeypatch.setattr(reference_module, "CHUNK_ELEMS", 100)
    assert chunk_len_for(2, 4, 4, 50) == 3
    x, sp = make_inputs(2, 4, 50, 4, OPTIONS["all"], seed=31)
    y_ref, last_ref = reference(x, sp)
    y, last = run(selective_scan_chunked, x, sp)
    assert rel(y, y_ref) < TOL[torch.float32] and rel(last, last_ref) < TOL[torch.float32]
    want = grads(selective_scan_sequential, {k: v.to(F64) for k, v in x.items()}, sp)
    got = grads(selective_scan_chunked, x, sp)
    for name in want:
        assert rel(got[name], want[name]) < 1e-5, name


def test_grads_keep_each_input_dtype():
    """bf16 activations with fp32 parameters, as under autocast: each gradient comes back in its input's dtype."""
    x, sp = make_inputs(2, 4, 12, 3, OPTIONS["all"], seed=13)
    for k in ("u", "delta", "B", "C", "z", "initial_state"):
        x[k] = x[k].bfloat16()
    g = grads(selective_scan_chunked, x, sp, chunk_len=5)
    want = grads(selective_scan_sequential, {k: v.to(F64) for k, v in x.items()}, sp)
    for name, t in x.items():
        assert g[name].dtype == t.dtype, name
        assert rel(g[name], want[name]) < 2e-2, (name, rel(g[name], want[name]))


def test_only_last_state_or_only_y_in_the_loss():
    x, sp = make_inputs(2, 3, 9, 2, OPTIONS["all"], dtype=F64, seed=17)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    for pick in (0, 1):
        out = run(selective_scan_chunked, leaves, sp, chunk_len=4)[pick]
        ref = run(selective_scan_sequential, leaves, sp)[pick]
        got = torch.autograd.grad(out.sum(), list(leaves.values()), materialize_grads=True)
        want = torch.autograd.grad(ref.sum(), list(leaves.values()), materialize_grads=True)
        for name, a, b in zip(leaves, got, want):  # z does not reach the last state: both zero then
            assert (a - b).abs().max() <= 1e-12 * b.abs().max(), (pick, name)


def test_only_some_inputs_require_grad():
    """Inputs without requires_grad get no gradient; the others are unchanged by that."""
    x, sp = make_inputs(2, 4, 10, 3, OPTIONS["all"], dtype=F64, seed=29)
    full = grads(selective_scan_chunked, x, sp, chunk_len=3)
    for names in (("u",), ("delta", "delta_bias"), ("A", "D"), ("B", "C", "z", "initial_state")):
        leaves = {k: v.clone().requires_grad_(k in names) for k, v in x.items()}
        y, last = run(selective_scan_chunked, leaves, sp, chunk_len=3)
        g = torch.Generator().manual_seed(1)
        gy, gl = torch.randn(y.shape, generator=g, dtype=F64), torch.randn(last.shape, generator=g, dtype=F64)
        ((y * gy).sum() + (last * gl).sum()).backward()
        for k, v in leaves.items():
            assert (v.grad is not None) == (k in names), k
            if v.grad is not None:
                assert rel(v.grad, full[k]) < 1e-12, k


def test_non_contiguous_inputs():
    """The Mamba block passes transposed views ([batch, L, dim] memory); the result must not depend on strides."""
    x, sp = make_inputs(2, 6, 11, 3, OPTIONS["all"], seed=19)
    views = {k: (v.transpose(1, 2).contiguous().transpose(1, 2) if v is not None and v.dim() == 3 else v)
             for k, v in x.items()}
    assert not views["u"].is_contiguous()
    y, last = run(selective_scan_chunked, views, sp, chunk_len=4)
    y_ref, last_ref = run(selective_scan_chunked, x, sp, chunk_len=4)
    assert torch.equal(y, y_ref) and torch.equal(last, last_ref)


@pytest.mark.parametrize("softplus", [False, True])
def test_overflow_case_large_delta_very_negative_A_long_L(softplus):
    """delta * A down to about -1e4 over L = 2000: a closed form through exp(-cumsum(delta * A)) overflows here
    (its cumsum reaches -1e7); the chunked scan must stay finite and equal to the loop, in value and gradient."""
    batch, dim, L, N = 1, 3, 2000, 4
    x, sp = make_inputs(batch, dim, L, N, {"D": True, "z": True, "delta_softplus": softplus}, seed=23,
                        delta_scale=50.0, A_max=200.0)
    x["delta"][:, 0] = 1e-4  # one channel with almost no decay, next to ones whose decay underflows to 0
    y_ref, last_ref = reference(x, sp)
    y, last = run(selective_scan_chunked, x, sp)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    assert rel(y, y_ref) < TOL[torch.float32] and rel(last, last_ref) < TOL[torch.float32]
    g = grads(selective_scan_chunked, x, sp)
    short = {k: v[..., :400] if v is not None and v.dim() == 3 and k != "initial_state" else v for k, v in x.items()}
    want = grads(selective_scan_sequential, {k: v.to(F64) if v is not None else None for k, v in short.items()}, sp)
    got = grads(selective_scan_chunked, short, sp, chunk_len=64)
    for name in g:
        assert torch.isfinite(g[name]).all(), name
        assert rel(got[name], want[name]) < 1e-4, (name, rel(got[name], want[name]))


def test_bad_chunk_len_and_empty_sequence():
    x, sp = make_inputs(1, 2, 3, 1)
    with pytest.raises(ValueError, match="chunk_len must be a positive"):
        run(selective_scan_chunked, x, sp, chunk_len=0)
    x, sp = make_inputs(1, 2, 0, 1)
    with pytest.raises(ValueError, match="L must be at least 1"):
        run(selective_scan_chunked, x, sp)
