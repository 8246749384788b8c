"""Every block: output shape, causality, and its bad-input errors."""
import pytest
import torch

from hybrid.blocks import build_block

D_MODEL = 16
CONFIGS = {
    "M": {"d_state": 4},
    "M_lti": {"d_state": 4, "selective": False},
    "M_nogate": {"d_state": 4, "gate": False},
    "A": {"n_heads": 4},
    "A_gqa": {"n_heads": 4, "n_kv_heads": 2},
    "A_norope": {"n_heads": 2, "rope_base": None},
    "F": {},
    "F_relu2": {"activation": "relu2"},
    "E": {"n_experts": 4, "top_k": 2},
    "S": {"d_state": 4, "headdim": 8, "chunk_size": 4},
    "S_groups_nonorm": {"d_state": 4, "headdim": 4, "ngroups": 2, "rmsnorm": False, "D_has_hdim": True,
                        "chunk_size": 8},
}


def make(name):
    torch.manual_seed(0)
    return build_block(name[0], D_MODEL, **CONFIGS[name]).double()


@pytest.mark.parametrize("name", CONFIGS)
def test_shape_and_causality(name):
    block = make(name)
    x = torch.randn(2, 13, D_MODEL, dtype=torch.float64)
    y, _ = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    t = 7
    x2 = x.clone()
    x2[:, t] += torch.randn(2, D_MODEL, dtype=torch.float64)
    y2, _ = block(x2)
    assert torch.equal(y2[:, :t], y[:, :t]), "an output before t changed when token t changed"
    assert not torch.allclose(y2[:, t:], y[:, t:]), "token t changed nothing at or after t"


def test_moe_aux_loss_and_counts():
    block = make("E")
    x = torch.randn(3, 10, D_MODEL, dtype=torch.float64)
    _, aux = block(x)
    counts = aux["expert_counts"]
    assert counts.shape == (4,) and counts.sum() == 3 * 10 * 2  # every token gets its k experts
    assert aux["moe_aux_loss"].dim() == 0 and 0 < aux["moe_aux_loss"] < 4  # n * sum f_i P_i lies in (0, n]
    aux["moe_aux_loss"].backward()
    assert block.mixer.router.weight.grad.abs().sum() > 0


def test_lti_has_no_input_dependent_projections():
    block = make("M_lti")
    assert not hasattr(block.mixer, "x_proj") and block.mixer.B.shape == (2 * D_MODEL, 4)


@pytest.mark.parametrize("symbol, kwargs, match", [
    ("A", {"n_heads": 5}, "d_model=16 is not divisible by n_heads=5"),
    ("A", {"n_heads": 4, "n_kv_heads": 3}, "n_heads=4 is not a multiple of n_kv_heads=3"),
    ("E", {"n_experts": 2, "top_k": 3}, "top_k=3 must be between 1 and n_experts=2"),
    ("S", {"headdim": 12}, "headdim=12 does not divide d_inner = expand . d_model = 32"),
    ("S", {"headdim": 8, "ngroups": 3}, "ngroups=3 does not divide nheads = d_inner / headdim = 4"),
    ("S", {"headdim": 8, "chunk_size": 48}, "chunk_size=48 must be a power of two"),
    ("F", {"activation": "gelu"}, "unknown MLP activation 'gelu'; allowed: swiglu, relu2"),
    ("X", {}, "unknown block symbol 'X'"),
])
def test_bad_config(symbol, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_block(symbol, D_MODEL, **kwargs)



def test_flash_attn_missing_names_package():
    pytest.importorskip("torch")
    import importlib.util
    if importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed here")
    block = build_block("A", D_MODEL, n_heads=4, backend="flash_attn")
    with pytest.raises(ImportError, match="pip install"):
        block(torch.randn(1, 4, D_MODEL))
