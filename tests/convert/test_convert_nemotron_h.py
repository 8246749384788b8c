"""transformers' NemotronHForCausalLM <-> HybridLM stacks of S, A and relu^2 F: the same logits and loss (fp32, rel
err <= 1e-5), export and back bit for bit, and the errors for what does not fit (MoE layers, Mamba-1, RoPE)."""
import pytest
import torch
from convert_models import check_export_round_trip, check_same_function, perturb, transformers

from hybrid.convert import UnsupportedConfig, from_transformers, to_transformers
from hybrid.convert.nemotron_h import clamps_to_time_step_limit
from hybrid.model import HybridLM


def tiny_nemotron_h(pattern="M-M*-", seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(hidden_size=16, hybrid_override_pattern=pattern, vocab_size=37, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8, intermediate_size=24, mamba_num_heads=4, mamba_head_dim=8,
                ssm_state_size=6, n_groups=2, conv_kernel=3, chunk_size=8, use_mamba_kernels=False)
    cfg = transformers.NemotronHConfig(**{**args, **kw})
    return perturb(transformers.NemotronHForCausalLM(cfg), seed).eval()


@pytest.mark.parametrize("pattern,kw", [
    ("M-M*-", {}),
    ("M*M-M-", dict(n_groups=1, use_bias=True, mlp_bias=True, residual_in_fp32=True, time_step_min=0.3,
                    time_step_limit=(0.01, 0.3))),  # < 5.25 clamps dt to (time_step_min, inf), ignoring the limit
], ids=["nemotron", "bias-fp32-residual-limits"])
def test_same_logits_and_loss(pattern, kw):
    hf = tiny_nemotron_h(pattern, **kw)
    ours = from_transformers(hf).eval()
    assert ours.pattern == pattern.replace("M", "S").replace("-", "F").replace("*", "A")
    assert ours.layers[1 if pattern[1] == "-" else 3].mixer.activation == "relu2"
    assert ours.layers[0].mixer.dt_limit == tuple(hf.model.layers[0].mixer.time_step_limit)  # what theirs clamps to
    check_same_function(hf, ours, 37, shapes=((2, 19), (1, 8)))


def test_export_and_back_bit_for_bit(tmp_path):
    hf = tiny_nemotron_h()
    ours = from_transformers(hf)
    back = check_export_round_trip(hf, ours, tmp_path, 37, "NemotronHForCausalLM")
    assert back.config.hybrid_override_pattern == "M-M*-"


def test_native_stack_from_megatron_pattern_exports():
    torch.manual_seed(0)
    ours = perturb(HybridLM(vocab_size=19, d_model=16, layout={"megatron": "M-*-M-"},
                            blocks={"S": {"d_state": 4, "headdim": 8, "chunk_size": 16},
                                    "A": {"n_heads": 2, "rope_base": None}, "F": {"activation": "relu2"}})).eval()
    hf = to_transformers(ours)
    assert hf.config.hybrid_override_pattern == "M-*-M-"
    check_same_function(hf, ours, 19, shapes=((2, 21),))


def test_moe_layers_are_refused_by_name():
    with pytest.raises(UnsupportedConfig, match="MoE layers"):
        from_transformers(tiny_nemotron_h("M-ME*", n_routed_experts=2, moe_intermediate_size=8,
                                          moe_shared_expert_intermediate_size=8, num_experts_per_tok=1))


@pytest.mark.parametrize("layout,blocks,match", [
    ("SFAF", {"A": {"rope_base": 10000.0}, "F": {"activation": "relu2"}}, "rope_base=null"),
    ("SAF", {"A": {"rope_base": None}}, "activation=relu2"),  # not Bamba's pairs: Nemotron-H, whose MLP is relu^2
    ("SFMF", {"F": {"activation": "relu2"}}, "Mamba-1 M has no form"),
    pytest.param("SF", {"S": {"headdim": 8, "dt_limit": (0.0, 0.5)}, "F": {"activation": "relu2"}},
                 "upper limit must be inf", marks=pytest.mark.skipif(
                     clamps_to_time_step_limit(), reason="transformers >= 5.25 clamps dt to time_step_limit")),
], ids=["rope", "swiglu", "mamba1", "dt-max"])
def test_export_says_why_it_does_not_fit(layout, blocks, match):
    with torch.device("meta"):
        model = HybridLM(vocab_size=11, d_model=16, layout=layout,
                         blocks={"S": {"headdim": 8}, "A": {"n_heads": 2}, **blocks})
    with pytest.raises(UnsupportedConfig, match=match):
        to_transformers(model)


@pytest.mark.skipif(not clamps_to_time_step_limit(), reason="transformers < 5.25 clamps dt to (time_step_min, inf)")
def test_a_finite_dt_limit_exports_where_transformers_clamps_to_it():
    torch.manual_seed(0)
    ours = perturb(HybridLM(vocab_size=19, d_model=16, layout="SFAF",
                            blocks={"S": {"d_state": 4, "headdim": 8, "chunk_size": 16, "dt_limit": (0.05, 0.5)},
                                    "A": {"n_heads": 2, "rope_base": None}, "F": {"activation": "relu2"}})).eval()
    hf = to_transformers(ours)
    assert tuple(hf.config.time_step_limit) == (0.05, 0.5)
    check_same_function(hf, ours, 19, shapes=((2, 21),))
