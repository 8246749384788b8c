"""The S block's fused gated RMSNorm (kernels/ssd/gated_rmsnorm.py) against GatedRMSNorm's PyTorch code in float64:
output and the gradients of y, z and the weight, both gate orders, several groups, group sizes that are not powers of
two, rows split over several backward programs; bf16; determinism; bad shapes refused. Interpreted on the CPU."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

pytest.importorskip("triton")

from hybrid.blocks.mamba2 import GatedRMSNorm
from hybrid.kernels.ssd import gated_rmsnorm as fused

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def run(M, D, gs, norm_before_gate, dtype, seed):
    """(fused out, dy, dz, dw), (float64 reference's) on fresh random inputs."""
    g = torch.Generator().manual_seed(seed)
    y, z = torch.randn(M, D, generator=g).to(dtype), torch.randn(M, D, generator=g).to(dtype)
    w, gout = torch.randn(D, generator=g), torch.randn(M, D, generator=g, dtype=torch.float64)
    ref = GatedRMSNorm(D, gs, 1e-5, norm_before_gate).double()
    ref.weight.data.copy_(w.double())
    y64, z64 = y.double().requires_grad_(True), z.double().requires_grad_(True)
    (ref(y64, z64) * gout).sum().backward()
    want = (ref(y64, z64).detach(), y64.grad, z64.grad, ref.weight.grad)
    yt, zt, wt = (t.clone().to(DEVICE).requires_grad_(True) for t in (y, z, w))
    out = fused.gated_rmsnorm_triton(yt, zt, wt, gs, 1e-5, norm_before_gate)
    (out.double() * gout.to(DEVICE)).sum().backward()
    return (out, yt.grad, zt.grad, wt.grad), want


@pytest.mark.parametrize("M,D,gs,norm_before_gate", [(7, 12, 6, False), (5, 16, 16, True), (3, 10, 5, True),
                                                     (9, 8, 8, False)])
def test_matches_the_torch_norm_in_float64(M, D, gs, norm_before_gate, monkeypatch):
    monkeypatch.setattr(fused, "ROW_PROGRAMS", 4)  # several rows per backward program, the last one short
    got, want = run(M, D, gs, norm_before_gate, torch.float32, seed=M + D)
    assert got[0].dtype == torch.float32
    for name, a, b in zip(("out", "dy", "dz", "dw"), got, want):
        assert rel_err(a.cpu(), b) < 2e-5, name


def test_bf16_in_bf16_out():
    got, want = run(6, 16, 8, False, torch.bfloat16, seed=1)
    assert got[0].dtype == got[1].dtype == got[2].dtype == torch.bfloat16
    for name, a, b in zip(("out", "dy", "dz", "dw"), got, want):
        assert rel_err(a.cpu(), b) < 1.5e-2, name


def test_backward_is_deterministic(monkeypatch):
    monkeypatch.setattr(fused, "ROW_PROGRAMS", 3)
    first, _ = run(11, 12, 4, False, torch.float32, seed=2)
    second, _ = run(11, 12, 4, False, torch.float32, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_bad_shapes_are_refused():
    y = torch.randn(2, 12)
    with pytest.raises(ValueError, match="multiple of group_size=5"):
        fused.gated_rmsnorm_triton(y, y, torch.ones(12), 5, 1e-5, False)


def test_the_block_refuses_an_unknown_norm_backend():
    with pytest.raises(ValueError, match="norm_backend='fast'; allowed: auto, torch, triton"):
        GatedRMSNorm(8, 4, backend="fast")


def test_the_block_with_the_fused_norm_equals_the_torch_norm():
    """Mamba2(norm_backend="triton") (fp32, the reference SSD): output and every parameter's gradient as with the
    PyTorch norm, both gate orders."""
    from hybrid.blocks.mamba2 import Mamba2
    for norm_before_gate in (False, True):
        blocks = []
        for backend in ("torch", "triton"):
            torch.manual_seed(0)
            blocks.append(Mamba2(16, d_state=4, headdim=8, ngroups=2, chunk_size=8, ssd_backend="reference",
                                 conv_backend="reference", norm_before_gate=norm_before_gate,
                                 norm_backend=backend).to(DEVICE))
        x = torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        outs = [m(x) for m in blocks]
        for out in outs:
            out.square().sum().backward()
        assert rel_err(outs[1].detach().cpu(), outs[0].detach().cpu()) < 2e-5
        for (name, p0), p1 in zip(blocks[0].named_parameters(), blocks[1].parameters()):
            assert rel_err(p1.grad.cpu(), p0.grad.cpu()) < 2e-5, name


def test_auto_takes_the_fused_norm_on_cuda_only_and_records_it():
    """norm_backend="auto" (the default): the PyTorch code on CPU tensors even under the interpreter (the CPU tests
    of other blocks stay fast), the fused kernel on CUDA tensors; the run record's `gated_rmsnorm` lists what ran."""
    from hybrid import records
    norm = GatedRMSNorm(8, 4).to(DEVICE)
    assert norm.backend == "auto"
    records.reset_backends()
    norm(torch.randn(3, 8, device=DEVICE), torch.randn(3, 8, device=DEVICE))
    assert records.backends()["gated_rmsnorm"] == (["triton"] if DEVICE == "cuda" else ["torch"])
