"""transformers' GraniteMoeHybridForCausalLM (dense) <-> HybridLM pairs of (S | A) + SwiGLU F: the same logits and
loss (fp32, rel err <= 1e-5) with Granite's four multipliers folded into the weights, export and back bit for bit,
and the errors for what does not fit (MoE layers, half-rotated heads, a biased MLP)."""
import pytest
import torch
from convert_models import check_export_round_trip, check_same_function, perturb, transformers

from hybrid.convert import UnsupportedConfig, from_transformers, to_transformers
from hybrid.model import HybridLM

MULTIPLIERS = dict(embedding_multiplier=3.0, residual_multiplier=0.4, logits_scaling=2.5, attention_multiplier=0.2)


def tiny_granite(layer_types=("mamba", "attention", "mamba"), seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=37, hidden_size=16, num_hidden_layers=len(layer_types), layer_types=list(layer_types),
                num_attention_heads=2, num_key_value_heads=1, num_local_experts=0, shared_intermediate_size=24,
                mamba_n_heads=4, mamba_d_state=6, mamba_n_groups=2, mamba_d_conv=3, mamba_chunk_size=8,
                position_embedding_type="rope", rms_norm_eps=1e-5, attention_multiplier=8 ** -0.5)  # head_dim 8
    cfg = transformers.GraniteMoeHybridConfig(**{**args, **kw})
    return perturb(transformers.GraniteMoeHybridForCausalLM(cfg), seed).eval()


@pytest.mark.parametrize("kw", [
    {},
    MULTIPLIERS,
    dict(MULTIPLIERS, tie_word_embeddings=True, position_embedding_type=None, attention_bias=True,
         mamba_proj_bias=True, mamba_n_groups=1, time_step_limit=(0.01, 0.3)),
], ids=["unit", "multipliers", "tied-nope-bias-limits"])
def test_same_logits_and_loss(kw):
    hf = tiny_granite(**kw)
    ours = from_transformers(hf).eval()
    assert ours.pattern == "SFAFSF"
    attn = ours.layers[2].mixer
    assert attn.rope_fraction == 1 and (attn.rope_base is None) == ("position_embedding_type" in kw)
    assert (ours.lm_head.weight is ours.embedding.weight) == bool(kw.get("tie_word_embeddings"))
    check_same_function(hf, ours, 37, shapes=((2, 19), (1, 8)))


def test_export_and_back_bit_for_bit(tmp_path):
    hf = tiny_granite()
    ours = from_transformers(hf)
    back = check_export_round_trip(hf, ours, tmp_path, 37, "GraniteMoeHybridForCausalLM")
    assert back.config.layer_types == ["linear_attention", "full_attention", "linear_attention"]


def test_multipliers_export_as_identity():
    hf = tiny_granite(**MULTIPLIERS)
    ours = from_transformers(hf).eval()
    back = to_transformers(ours)
    assert (back.config.embedding_multiplier, back.config.residual_multiplier, back.config.logits_scaling) == (1, 1, 1)
    assert back.config.attention_multiplier == pytest.approx(8 ** -0.5)  # head_dim 8
    check_same_function(back, ours, 37, shapes=((2, 13),))


def test_moe_layers_are_refused_by_name():
    with pytest.raises(UnsupportedConfig, match="num_local_experts=2"):
        from_transformers(tiny_granite(num_local_experts=2, num_experts_per_tok=1, intermediate_size=8))


@pytest.mark.parametrize("layout,blocks,match", [
    ("SFAF", {"F": {"bias": True}}, "shared MLP is SwiGLU without bias"),
    ("SFAFSF", {"S": {"headdim": 8, "norm_before_gate": True}}, "norm_before_gate=True"),
    ("SFAFSF", {"S": {"headdim": 8}, "A": {"rope_base": None, "bias": True}}, None),  # fits: the control
], ids=["mlp-bias", "norm-first", "fits"])
def test_export_says_why_it_does_not_fit(layout, blocks, match):
    with torch.device("meta"):
        model = HybridLM(vocab_size=11, d_model=16, layout=layout,
                         blocks={"S": {"headdim": 8, **blocks.get("S", {})}, "A": {"n_heads": 2, **blocks.get("A", {})},
                                 "F": blocks.get("F", {})})
    if match is None:
        assert type(to_transformers(model.to_empty(device="cpu"))).__name__ == "GraniteMoeHybridForCausalLM"
        return
    with pytest.raises(UnsupportedConfig, match=match):
        to_transformers(model)


@pytest.mark.parametrize("attention,target", [
    ({"rope_fraction": 0.5}, "BambaForCausalLM"),
    ({}, "GraniteMoeHybridForCausalLM"),
    ({"rope_base": None}, "GraniteMoeHybridForCausalLM"),
], ids=["half-rope", "whole-rope", "no-rope"])
def test_swiglu_pairs_export_to_bamba_or_granite_by_their_rope(attention, target):
    torch.manual_seed(0)
    ours = perturb(HybridLM(vocab_size=11, d_model=16, layout="SFAF",
                            blocks={"S": {"headdim": 8, "d_state": 4}, "A": {"n_heads": 2, **attention}})).eval()
    hf = to_transformers(ours)
    assert type(hf).__name__ == target
    check_same_function(hf, ours, 11, shapes=((2, 9),))


def test_converted_granite_generates_transformers_tokens():
    """Greedy decoding through our caches (multipliers folded) gives transformers' own greedy tokens."""
    hf = tiny_granite(**MULTIPLIERS)
    prompt = torch.randint(0, 37, (2, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12,
                           do_sample=False, pad_token_id=0)
    assert torch.equal(from_transformers(hf).eval().generate(prompt, max_new_tokens=12), want)


@pytest.mark.parametrize("name,kw,match", [
    ("Zamba2", dict(num_hidden_layers=3, layers_block_type=["mamba", "hybrid", "mamba"]), "shared attention"),
    ("FalconH1", {}, "in parallel"),
], ids=["zamba2", "falcon-h1"])
def test_hybrids_without_a_sequential_form_are_refused_by_name(name, kw, match):
    with torch.device("meta"):  # their default widths, built without memory
        hf = getattr(transformers, f"{name}ForCausalLM")(getattr(transformers, f"{name}Config")(**kw))
    with pytest.raises(UnsupportedConfig, match=match):
        from_transformers(hf)
