"""The cached prefill hands the scan steps-contiguous tensors (what the Triton scan reads coalesced), as the
training forward does: a feature-contiguous view there made the GPU prefill several times slower."""
import pytest
import torch

from hybrid.blocks import mamba_inference
from hybrid.blocks.mamba import Mamba


@pytest.mark.parametrize("kwargs", [{}, {"dt_bc_norm": True}, {"gate": False}], ids=["plain", "dt_bc_norm", "no_gate"])
def test_prefill_feeds_the_scan_steps_contiguous(monkeypatch, kwargs):
    torch.manual_seed(0)
    mixer = Mamba(12, d_state=4, **kwargs)
    seen = {}
    real = mamba_inference.selective_scan

    def spy(u, delta, A, B, C, **kw):
        seen.update(u=u.stride(-1), delta=delta.stride(-1), B=B.stride(-1), C=C.stride(-1),
                    z=None if kw.get("z") is None else kw["z"].stride(-1))
        return real(u, delta, A, B, C, **kw)

    monkeypatch.setattr(mamba_inference, "selective_scan", spy)
    cache = mixer.allocate_inference_cache(3, 16)
    mixer(torch.randn(3, 9, 12), cache=cache)
    expected = dict(u=1, delta=1, B=1, C=1, z=None if kwargs.get("gate") is False else 1)
    assert seen == expected
