"""Our Triton causal depthwise conv1d (+ SiLU) against the float64 PyTorch definition: output and every gradient,
in several memory layouts, awkward shapes (L 1, 63, 300; dim 5), determinism; the interface's dispatch and errors.
Without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set before the kernel module is imported).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

pytest.importorskip("triton")

from hybrid.bench.scan_inputs import LAYOUTS  # contiguous, block (feature-major), channels_last
from hybrid.kernels.causal_conv1d import causal_conv1d
from hybrid.kernels.causal_conv1d.reference import causal_conv1d_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-6, torch.bfloat16: 1e-2}


def inputs(batch, dim, L, K, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, L, generator=g).to(dtype)
    w = torch.randn(dim, K, generator=g) * 0.5
    b = torch.randn(dim, generator=g) * 0.3 if bias else None
    return x.to(DEVICE), w.to(DEVICE), (b.to(DEVICE) if b is not None else None)


def grads(fn, x, w, b, gout, **kw):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    out = fn(*leaves, **kw)
    given = [t for t in leaves if t is not None]
    return out, torch.autograd.grad(out, given, gout)


def rel(x, ref):
    return ((x.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch,dim,L,K", [(2, 5, 63, 4), (1, 5, 1, 4), (2, 37, 300, 3), (1, 3, 7, 2)])
def test_matches_float64(layout, batch, dim, L, K):
    x, w, b = inputs(batch, dim, L, K, torch.float32)
    x = LAYOUTS[layout](x)
    gout = LAYOUTS[layout](torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(1)).to(DEVICE))
    out, g = grads(causal_conv1d, x, w, b, gout, backend="triton")
    ref, g64 = grads(causal_conv1d_reference, x.double(), w.double(), b.double(), gout.double())
    assert out.stride() == x.stride() and g[0].stride() == x.stride(), "output and dx in x's layout"
    errs = {n: rel(a, r) for n, a, r in zip(("out", "dx", "dw", "db"), (out, *g), (ref, *g64))}
    assert all(e < TOL[torch.float32] for e in errs.values()), errs


@pytest.mark.parametrize("activation", [None, "silu"])
def test_bf16_no_bias_and_activation(activation):
    x, w, _ = inputs(2, 5, 45, 4, torch.bfloat16, bias=False)
    gout = torch.randn(2, 5, 45, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    out, g = grads(causal_conv1d, x, w, None, gout.to(torch.bfloat16), activation=activation, backend="triton")
    ref, g64 = grads(causal_conv1d_reference, x.double(), w.double(), None, gout.double(), activation=activation)
    assert out.dtype == torch.bfloat16 and g[0].dtype == torch.bfloat16 and g[1].dtype == torch.float32
    for a, r in zip((out, *g), (ref, *g64)):
        assert rel(a, r) < TOL[torch.bfloat16]


def test_deterministic_backward():
    x, w, b = inputs(2, 6, 300, 4, torch.float32)
    gout = torch.randn(2, 6, 300, device=DEVICE)
    g1 = grads(causal_conv1d, x, w, b, gout, backend="triton")[1]
    g2 = grads(causal_conv1d, x, w, b, gout, backend="triton")[1]
    assert all(torch.equal(a, c) for a, c in zip(g1, g2))


def test_custom_op_registration():
    x, w, b = inputs(1, 3, 10, 4, torch.float32)
    from hybrid.kernels.causal_conv1d.triton import _fwd_op  # noqa: F401 - registers the ops
    torch.library.opcheck(torch.ops.hybrid.causal_conv1d_fwd.default,
                          [x.requires_grad_(True), w.requires_grad_(True), b.requires_grad_(True), True],
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("kw,match", [
    (dict(x=torch.randn(2, 5)), "x must be"),
    (dict(weight=torch.randn(4, 4)), "weight must be"),
    (dict(bias=torch.randn(3)), "bias must be"),
    (dict(activation="gelu"), "activation='gelu'"),
    (dict(backend="cuda"), "unknown causal_conv1d backend 'cuda'"),
])
def test_bad_inputs(kw, match):
    args = dict(x=torch.randn(2, 5, 8), weight=torch.randn(5, 4), bias=torch.randn(5))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        causal_conv1d(**args)


def test_auto_is_reference_on_cpu_tensors():
    x, w, b = inputs(1, 4, 9, 4, torch.float32)
    torch.testing.assert_close(causal_conv1d(x.cpu(), w.cpu(), b.cpu(), backend="auto"),
                               causal_conv1d_reference(x.cpu(), w.cpu(), b.cpu()), rtol=0, atol=0)
