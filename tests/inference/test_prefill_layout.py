"""The cached prefill hands the scan steps-contiguous tensors (what the Triton scan reads coalesced), as the
training forward does: a feature-contiguous view there made the GPU prefill several times slower."""
import pytest
import torch

from hybrid.blocks import mamba as mamba_module
from hybrid.blocks import mamba_inference
from hybrid.blocks.mamba import Mamba


@pytest.mark.parametrize("kwargs", [{}, {"dt_bc_norm": True}, {"gate": False}], ids=["plain", "dt_bc_norm", "no_gate"])
def test_prefill_feeds_the_scan_steps_contiguous(monkeypatch, kwargs):
    """Both prefills: into an empty cache (the training forward, mamba.py) and continuing one (mamba_inference)."""
    torch.manual_seed(0)
    mixer = Mamba(12, d_state=4, **kwargs)
    seen = []

    def spying(real):
        def spy(u, delta, A, B, C, **kw):
            seen.append({"u": u.stride(-1), "delta": delta.stride(-1), "B": B.stride(-1), "C": C.stride(-1),
                             "z": None if kw.get("z") is None else kw["z"].stride(-1)})
            return real(u, delta, A, B, C, **kw)
        return spy

    monkeypatch.setattr(mamba_module, "selective_scan", spying(mamba_module.selective_scan))
    monkeypatch.setattr(mamba_inference, "selective_scan", spying(mamba_inference.selective_scan))
    cache = mixer.allocate_inference_cache(3, 16)
    mixer(torch.randn(3, 9, 12), cache=cache)
    assert not cache.empty
    mixer(torch.randn(3, 5, 12), cache=cache)
    expected = {"u": 1, "delta": 1, "B": 1, "C": 1, "z": None if kwargs.get("gate") is False else 1}
    assert seen == [expected, expected]


@pytest.mark.parametrize("L", [1, 3, 9])
def test_empty_cache_prefill_equals_the_general_one(L):
    """The empty-cache path (training forward + fill_empty) leaves the cache and output the general prefill would,
    also for prompts shorter than the conv (L < d_conv)."""
    torch.manual_seed(0)
    mixer = Mamba(12, d_state=4)
    x = torch.randn(2, L, 12)
    fast = mixer.allocate_inference_cache(2, 16)
    y_fast = mixer(x, cache=fast)
    slow = mixer.allocate_inference_cache(2, 16)
    slow.empty = False  # states are zero, but take the general path
    y_slow = mixer(x, cache=slow)
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.conv_state, slow.conv_state)
    torch.testing.assert_close(fast.ssm_state, slow.ssm_state, rtol=1e-5, atol=1e-6)
