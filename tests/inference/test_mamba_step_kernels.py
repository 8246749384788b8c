"""The fused Triton decode-step kernels (hybrid.kernels.mamba_step) equal the plain-op step: outputs and both
states over several steps, every Mamba variant, awkward sizes (channels not a multiple of the block, N=5, d_conv 3).
Without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before they are imported)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from hybrid.blocks import mamba_inference
from hybrid.blocks.mamba import Mamba

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton's own jit functions (tl.sum) are interpretable only when triton was first imported under TRITON_INTERPRET=1
LATE = DEVICE == "cpu" and type(triton.language.standard.sum).__name__ != "InterpretedFunction"
needs_kernels = pytest.mark.skipif(LATE, reason="triton was imported before TRITON_INTERPRET=1 was set (by an "
                                                "earlier test module): test_in_a_fresh_process runs them")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@needs_kernels
@pytest.mark.parametrize("kw", [dict(d_state=5, d_conv=3), dict(selective=False), dict(gate=False),
                                dict(dt_bc_norm=True, conv_bias=False)],
                         ids=["selective", "lti", "no-gate", "dt-bc-norm"])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_step_equals_plain_step(kw, batch):
    torch.manual_seed(0)
    mixer = Mamba(40, **kw).to(DEVICE)  # d_inner 80: one full block of 64 channels and a partial one
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    caches = [mixer.allocate_inference_cache(batch, 0) for _ in range(2)]
    caches[0].conv_state.normal_()  # a state in flight, not zeros
    caches[0].ssm_state.normal_()
    caches[1].conv_state.copy_(caches[0].conv_state)
    caches[1].ssm_state.copy_(caches[0].ssm_state)
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(batch, 40, device=DEVICE)
            want = mamba_inference.step(mixer, x, caches[0], backend="torch")
            got = mamba_inference.step(mixer, x, caches[1], backend="triton")
            assert rel(got, want) < 1e-5
            assert rel(caches[1].conv_state, caches[0].conv_state) < 1e-6
            assert rel(caches[1].ssm_state, caches[0].ssm_state) < 1e-5


def test_unknown_backend():
    mixer = Mamba(8)
    with pytest.raises(ValueError, match="unknown Mamba step backend 'cuda'"):
        mamba_inference.step(mixer, torch.zeros(1, 8), mixer.allocate_inference_cache(1, 0), backend="cuda")


@pytest.mark.skipif(not LATE, reason="the kernel tests ran in this process")
def test_in_a_fresh_process():
    """In a suite where triton was imported first without the interpreter, the kernel tests run in a new process."""
    import subprocess
    import sys
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-k", "not fresh_process",
           __file__]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0 and " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-3000:]



def test_a_failing_fused_kernel_is_probed_once_and_logged(monkeypatch, caplog):
    """backend="auto" on CUDA first probes the fused step on copies of the states (fused_works): a failing kernel
    is logged once per shape, the cache stays untouched, and the step then takes the plain ops."""
    mixer = Mamba(8)
    cache = mixer.allocate_inference_cache(2, 0)
    cache.ssm_state.normal_()
    before = [cache.conv_state.clone(), cache.ssm_state.clone()]
    calls = []

    def broken(mixer, x, probe):
        calls.append(1)
        probe.conv_state.add_(1.0)  # a half-done step on the probe's states must not leak
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(mamba_inference, "fused_step", broken)
    monkeypatch.setattr(mamba_inference, "_FUSED_WORKS", {})
    x = torch.randn(2, 8)
    assert not mamba_inference.fused_works(mixer, x, cache) and not mamba_inference.fused_works(mixer, x, cache)
    assert len(calls) == 1 and "fused Triton kernels failed" in caplog.text
    assert torch.equal(cache.conv_state, before[0]) and torch.equal(cache.ssm_state, before[1])
