"""The SSD's fused dt preparation and log decays (kernels/ssd/dt_decays.py) against the same steps in float64 PyTorch
(process_dt, then the cumulative sum of dt * A per chunk): dts, acs + acs_lo and the gradients of dt, A and dt_bias,
with and without bias, softplus and clamp, a length that is not a multiple of the chunk (the padding), 16-bit dt,
strided dt, determinism. Interpreted on the CPU."""
import importlib
import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

pytest.importorskip("triton")

from hybrid.kernels.ssd.reference import process_dt

DtDecays = importlib.import_module("hybrid.kernels.ssd.dt_decays").DtDecays
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()  # the float64 reference lives on the CPU
    return ((a - b).norm() / b.norm()).item()


def reference(dt, A, dt_bias, softplus, limit, Q, Lp):
    """dts [b, Lp, h] and acs [b, h, Lp] in float64, the padding's dt 0."""
    dts = process_dt(dt, dt_bias, softplus, limit, torch.float64)
    dts = torch.nn.functional.pad(dts, (0, 0, 0, Lp - dt.shape[1]))
    b, _, h = dts.shape
    acs = (dts * A.double()).view(b, Lp // Q, Q, h).cumsum(2).permute(0, 3, 1, 2).reshape(b, h, Lp)
    return dts, acs


def inputs(batch, T, heads, dtype, seed, bias=True):
    g = torch.Generator().manual_seed(seed)
    dt = (torch.randn(batch, T, heads, generator=g) * 2 - 1).to(dtype)
    A = -torch.rand(heads, generator=g) * 4 - 0.5
    dt_bias = torch.randn(heads, generator=g) * 0.5 if bias else None
    return dt, A, dt_bias


@pytest.mark.parametrize("T,Q,heads,bias,softplus,limit", [
    (64, 16, 3, True, True, (0.0, math.inf)),
    (50, 16, 1, True, True, (0.1, 0.9)),     # padding; the clamp active on both sides
    (37, 8, 20, False, True, (0.0, 2.0)),    # more heads than one program's block
    (33, 32, 4, True, False, (0.0, math.inf)),
    (16, 16, 2, False, False, (0.05, math.inf)),
])
def test_forward_and_gradients_match_float64(T, Q, heads, bias, softplus, limit):
    dt, A, dt_bias = inputs(2, T, heads, torch.float32, seed=T + heads, bias=bias)
    Lp = -(-T // Q) * Q
    leaves = [t.clone().to(DEVICE).requires_grad_(True) if t is not None else None for t in (dt, A, dt_bias)]
    dts, acs, acs_lo = DtDecays.apply(*leaves, softplus, limit, Q, Lp)
    ref_leaves = [t.double().requires_grad_(True) if t is not None else None for t in (dt, A, dt_bias)]
    want_dts, want_acs = reference(*ref_leaves, softplus, limit, Q, Lp)
    assert rel_err(dts, want_dts) < 1e-6
    assert rel_err(acs, want_acs) < 1e-6
    # acs + acs_lo carries the fp64 sum of the fp32 dts * A: exact to fp64 rounding, not fp32's
    b, h = dts.shape[0], dts.shape[2]
    exact = (dts.detach().double() * A.double().to(DEVICE)).view(b, Lp // Q, Q, h).cumsum(2)
    exact = exact.permute(0, 3, 1, 2).reshape(b, h, Lp)
    assert rel_err(acs.double() + acs_lo.double(), exact) < 1e-13 < rel_err(acs, exact)
    assert not acs_lo.requires_grad
    g = torch.Generator().manual_seed(1)
    g_dts, g_acs = torch.randn(dts.shape, generator=g), torch.randn(acs.shape, generator=g)
    ((dts.double() * g_dts.to(DEVICE)).sum() + (acs.double() * g_acs.to(DEVICE)).sum()).backward()
    ((want_dts * g_dts.double()).sum() + (want_acs * g_acs.double()).sum()).backward()
    for name, got, want in zip(("dt", "A", "dt_bias"), leaves, ref_leaves):
        if got is not None:
            assert got.grad.shape == got.shape
            assert rel_err(got.grad, want.grad) < 1e-5, name
    if T % Q:  # the padding (in the last chunk): no input, no decay
        assert torch.all(dts[:, T:] == 0) and torch.all(acs[:, :, T:] == acs[:, :, T - 1:T])


def test_strided_16bit_dt_and_bitwise_repeatable():
    """dt as the block hands it over (a column slice of the in_proj output, bf16/fp16): same as a contiguous fp32 copy
    of its values, and twice the same bits."""
    dtype = torch.float16 if DEVICE == "cpu" else torch.bfloat16
    wide = torch.randn(2, 40, 11, generator=torch.Generator().manual_seed(3)).to(dtype).to(DEVICE)
    dt = wide[:, :, 2:7]  # strides (440, 11, 1)
    A, dt_bias = -torch.rand(5, device=DEVICE) - 0.5, torch.randn(5, device=DEVICE) * 0.3
    runs = []
    for _ in range(2):
        d, a, bias = (t.detach().clone().requires_grad_(True) for t in (dt, A, dt_bias))
        out = DtDecays.apply(d, a, bias, True, (0.0, math.inf), 16, 48)
        (out[0].sum() + (out[1] * torch.linspace(-1, 1, 48, device=DEVICE)).sum()).backward()
        runs.append([*out, d.grad, a.grad, bias.grad])
    assert runs[0][3].dtype == dtype and runs[0][3].shape == dt.shape
    assert all(torch.equal(x, y) for x, y in zip(*runs))
    contiguous = DtDecays.apply(dt.float().contiguous(), A, dt_bias, True, (0.0, math.inf), 16, 48)
    assert all(torch.equal(x, y) for x, y in zip(runs[0][:3], contiguous))
