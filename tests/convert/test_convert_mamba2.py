"""transformers' Mamba2ForCausalLM <-> HybridLM "S" stacks: the same logits and loss (fp32, rel err <= 1e-5), the
incremental path against theirs, export and back bit for bit, and the errors for what does not fit."""
import pytest
import torch
from convert_models import check_export_round_trip, check_same_function, perturb, transformers

from hybrid.convert import UnsupportedConfig, from_transformers, to_transformers
from hybrid.model import HybridLM


def tiny_mamba2(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(hidden_size=16, num_hidden_layers=3, vocab_size=37, num_heads=8, head_dim=4, state_size=6,
                n_groups=2, expand=2, conv_kernel=3, chunk_size=8, tie_word_embeddings=False)
    cfg = transformers.Mamba2Config(**{**args, **kw})
    return perturb(transformers.Mamba2ForCausalLM(cfg), seed).eval()


@pytest.mark.parametrize("kw", [
    {},
    dict(n_groups=1, use_bias=True, use_conv_bias=False, tie_word_embeddings=True, time_step_limit=(0.01, 0.2)),
    dict(n_groups=4, num_heads=4, head_dim=8, chunk_size=4, layer_norm_epsilon=1e-3),
], ids=["groups2", "bias-tied-limits", "groups-per-head"])
def test_mamba2_same_logits_and_loss(kw):
    hf = tiny_mamba2(**kw)
    ours = from_transformers(hf).eval()
    mixer = ours.layers[0].mixer
    assert ours.pattern == "SSS" and ours.residual_in_fp32
    assert (mixer.nheads, mixer.ngroups) == (hf.config.num_heads, hf.config.n_groups)
    assert mixer.dt_limit == tuple(hf.config.time_step_limit)
    check_same_function(hf, ours, 37, shapes=((2, 19), (1, 8), (1, 1)))


def test_export_and_back_bit_for_bit(tmp_path):
    hf = tiny_mamba2()
    ours = from_transformers(hf)
    check_export_round_trip(hf, ours, tmp_path, 37, "Mamba2ForCausalLM")


def test_native_stack_exports():
    torch.manual_seed(0)
    ours = perturb(HybridLM(vocab_size=19, d_model=16, layout="SSSS", residual_in_fp32=True,
                            blocks={"S": {"d_state": 4, "headdim": 8, "chunk_size": 16}})).eval()
    hf = to_transformers(ours)
    assert hf.config.num_heads == 4 and hf.config.tie_word_embeddings
    check_same_function(hf, ours, 19, shapes=((2, 21),))


@pytest.mark.parametrize("blocks,layout,match", [
    ({"rmsnorm": False}, "SS", "rmsnorm=False"),
    ({"norm_before_gate": True}, "SS", "norm_before_gate=True"),
    ({"D_has_hdim": True}, "SS", "D_has_hdim=True"),
    ({"rmsnorm_eps": 1e-3}, "SS", "rmsnorm_eps=0.001 != norm_eps=1e-05"),
], ids=["no-norm", "norm-first", "D-per-channel", "two-eps"])
def test_export_says_why_it_does_not_fit(blocks, layout, match):
    with torch.device("meta"):
        model = HybridLM(vocab_size=11, d_model=16, layout=layout, blocks={"S": {"headdim": 8, **blocks}})
    with pytest.raises(UnsupportedConfig, match=match):
        to_transformers(model)
