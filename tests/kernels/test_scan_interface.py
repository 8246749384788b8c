"""`selective_scan`'s dispatch: clear errors for bad inputs and backends, and `auto` on the CPU runs `reference`."""
import importlib
import importlib.util
import logging
import re

import pytest
import torch

from hybrid.kernels.selective_scan import backends_used, resolve_backend, selective_scan
from hybrid.kernels.selective_scan.reference import selective_scan_sequential

interface = importlib.import_module("hybrid.kernels.selective_scan.interface")
CPU = torch.device("cpu")


def inputs(batch=2, dim=5, L=7, N=3, lti=False):
    g = torch.Generator().manual_seed(0)
    return dict(u=torch.randn(batch, dim, L, generator=g), delta=torch.rand(batch, dim, L, generator=g),
                A=-torch.rand(dim, N, generator=g) - 0.1,
                B=torch.randn(dim, N, generator=g) if lti else torch.randn(batch, N, L, generator=g),
                C=torch.randn(dim, N, generator=g) if lti else torch.randn(batch, N, L, generator=g),
                D=torch.randn(dim, generator=g), z=torch.randn(batch, dim, L, generator=g),
                delta_bias=torch.randn(dim, generator=g), initial_state=torch.randn(batch, dim, N, generator=g))


BAD_SHAPES = {  # name -> (replacement, words the error must contain)
    "u_2d": ("u", torch.randn(5, 7), "u must be [batch, dim, L]"),
    "A_dim": ("A", torch.randn(4, 3), "A must be [dim=5, N]"),
    "delta_L": ("delta", torch.rand(2, 5, 6), "delta must have shape (2, 5, 7)"),
    "z_batch": ("z", torch.randn(3, 5, 7), "z must have shape (2, 5, 7)"),
    "B_L": ("B", torch.randn(2, 3, 8), "B must have shape (2, 3, 7)"),
    "C_N": ("C", torch.randn(2, 4, 7), "C must have shape (2, 3, 7)"),
    "B_lti_N": ("B", torch.randn(5, 4), "B must have shape (5, 3)"),
    "D": ("D", torch.randn(4), "D must have shape (5,)"),
    "delta_bias": ("delta_bias", torch.randn(5, 1), "delta_bias must have shape (5,)"),
    "initial_state": ("initial_state", torch.randn(2, 3, 5), "initial_state must have shape (2, 5, 3)"),
}


@pytest.mark.parametrize("case", BAD_SHAPES)
def test_mismatched_shapes_name_the_tensor(case):
    name, bad, words = BAD_SHAPES[case]
    x = inputs()
    x[name] = bad
    with pytest.raises(ValueError, match=re.escape(words)):
        selective_scan(**x, backend="reference")


@pytest.mark.parametrize("name", ["u", "delta", "B", "D", "initial_state"])
def test_integer_dtypes_are_refused(name):
    x = inputs()
    x[name] = x[name].to(torch.int64)
    with pytest.raises(ValueError, match=f"{name} must be a floating tensor .* got torch.int64"):
        selective_scan(**x, backend="reference")


def test_unknown_backend_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown selective-scan backend 'cuda_fast'; allowed: auto, reference"):
        selective_scan(**inputs(), backend="cuda_fast")


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is not None, reason="mamba-ssm is installed here")
def test_mamba_ssm_backend_not_installed_names_the_package():
    with pytest.raises(ImportError, match="mamba-ssm"):
        selective_scan(**inputs(), backend="mamba_ssm")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_backend_on_cpu_tensors_says_so(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="runs on CUDA tensors .* got tensors on cpu"):
        selective_scan(**inputs(), backend="triton")


def test_auto_on_cpu_runs_reference_and_logs_it_once(monkeypatch, caplog):
    monkeypatch.setattr(interface._usage, "_logged", set())
    monkeypatch.setattr(interface._usage, "_used", set())
    x = inputs()
    with caplog.at_level(logging.INFO, logger=interface.__name__):
        assert resolve_backend("auto", CPU) == "reference"
        y = selective_scan(**x, delta_softplus=True)
        selective_scan(**x, delta_softplus=True)
    assert backends_used() == ["reference"]
    assert [r.getMessage() for r in caplog.records].count("selective_scan backend=auto chose 'reference' on cpu") == 1
    want = selective_scan_sequential(**{k: v.double() for k, v in x.items()}, delta_softplus=True)
    assert ((y.double() - want).norm() / want.norm()).item() < 1e-5


def test_auto_on_cuda_picks_triton_where_installed(monkeypatch):
    monkeypatch.setattr(interface._usage, "_logged", set())
    real = interface.importlib.util.find_spec
    monkeypatch.setattr(interface.importlib.util, "find_spec", lambda name: object() if name == "triton" else real(name))
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    monkeypatch.setattr(interface.importlib.util, "find_spec", lambda name: None if name == "triton" else real(name))
    assert resolve_backend("auto", torch.device("cuda")) == "reference"


@pytest.mark.parametrize("lti", [False, True], ids=["selective", "lti"])
def test_reference_and_sequential_backends_agree_with_last_state(lti):
    x = inputs(lti=lti)
    y, last = selective_scan(**x, return_last_state=True, backend="reference")
    y_s, last_s = selective_scan(**x, return_last_state=True, backend="sequential")
    assert y.shape == (2, 5, 7) and last.shape == (2, 5, 3)
    assert torch.allclose(y, y_s, rtol=1e-5, atol=1e-5) and torch.allclose(last, last_s, rtol=1e-5, atol=1e-5)
