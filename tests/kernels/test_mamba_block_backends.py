"""The Mamba block on our Triton kernels (scan and conv) equals the block on the PyTorch references: output and every
parameter gradient, for the selective, Jamba (dt_bc_norm) and LTI variants. The block hands the kernels
feature-major views ([batch, rows, L] views of [rows, batch * L] memory); these tests check that wiring.
Without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set before they are imported)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

pytest.importorskip("triton")

from hybrid.blocks.mamba import Mamba

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("kwargs", [{}, {"dt_bc_norm": True}, {"selective": False}, {"gate": False}],
                         ids=["selective", "dt_bc_norm", "lti", "no_gate"])
def test_triton_block_equals_reference_block(kwargs):
    torch.manual_seed(0)
    fast = Mamba(8, d_state=4, scan_backend="triton", conv_backend="triton", **kwargs).to(DEVICE)
    ref = Mamba(8, d_state=4, scan_backend="reference", conv_backend="reference", **kwargs).to(DEVICE)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 21, 8, device=DEVICE)
    g = torch.randn(2, 21, 8, device=DEVICE)
    out_f, out_r = fast(x), ref(x)
    torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5)
    grads_f = torch.autograd.grad(out_f, list(fast.parameters()), g)
    grads_r = torch.autograd.grad(out_r, list(ref.parameters()), g)
    for (name, _), gf, gr in zip(fast.named_parameters(), grads_f, grads_r):
        torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
