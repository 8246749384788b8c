"""transformers' Mamba and Jamba -> HybridLM: the same logits and loss; HybridLM -> transformers and back, bit for
bit; and the errors for what does not fit."""
import pytest
import torch
from convert_models import check_same_function, perturb, tiny_jamba, tiny_mamba, transformers

from hybrid.convert import ConversionError, UnsupportedConfig, from_transformers, to_transformers
from hybrid.model import HybridLM


@pytest.mark.parametrize("tie,bias", [(True, False), (False, True)], ids=["tied", "untied-bias"])
def test_mamba_same_logits_and_loss(tie, bias):
    hf = tiny_mamba(tie=tie, bias=bias)
    ours = from_transformers(hf).eval()
    assert ours.pattern == "MMM" and ours.residual_in_fp32
    assert (ours.lm_head.weight is ours.embedding.weight) == tie
    assert ours.layers[0].mixer.in_proj.bias is not None if bias else ours.layers[0].mixer.in_proj.bias is None
    check_same_function(hf, ours, 41, shapes=((2, 17), (1, 33)))


@pytest.mark.parametrize("kw,pattern", [
    ({}, "MFAEMFAE"),
    (dict(num_hidden_layers=3, attn_layer_period=3, attn_layer_offset=0, expert_layer_period=3,
          expert_layer_offset=2, num_experts=3, num_experts_per_tok=1, tie_word_embeddings=True), "AFMFME"),
], ids=["attn-moe-every-2nd", "period-3-top1-tied"])
def test_jamba_same_logits_and_loss(kw, pattern):
    hf = tiny_jamba(**kw)
    ours = from_transformers(hf).eval()
    assert ours.pattern == pattern and ours.layout_source == "jamba"
    moe = next(layer.mixer for layer in ours.layers if layer.symbol == "E")
    assert not moe.renormalize and ours.layers[0].norm.eps == 1e-6
    check_same_function(hf, ours, 53, shapes=((2, 17), (1, 33)))
    with torch.no_grad():  # the routing really spreads tokens over several experts
        counts = ours(torch.randint(0, 53, (2, 33))).expert_counts
    assert all((c > 0).sum() > 1 for c in counts.values())


def test_from_saved_directories(tmp_path):
    """Files as save_pretrained writes them: Mamba's tied head left out, Jamba's experts one by one."""
    for name, hf, vocab in (("mamba", tiny_mamba(), 41), ("jamba", tiny_jamba(), 53)):
        hf.save_pretrained(tmp_path / name)
        check_same_function(hf, from_transformers(tmp_path / name).eval(), vocab, shapes=((2, 9),))


def test_import_export_round_trip_bit_for_bit(tmp_path):
    for hf in (tiny_mamba(), tiny_mamba(tie=False, bias=True), tiny_jamba()):
        ours = from_transformers(hf)
        back = to_transformers(ours)
        assert type(back) is type(hf) and not back.training
        tied = back.get_output_embeddings().weight is back.get_input_embeddings().weight
        assert tied == hf.config.tie_word_embeddings
        want = hf.state_dict()
        got = back.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
        again = from_transformers(back)
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))


def test_export_native_jamba_stack_loads_with_from_pretrained(tmp_path):
    torch.manual_seed(0)
    ours = HybridLM(vocab_size=29, d_model=16, layout="MFMEAFME", tie_embeddings=False, norm_eps=1e-6,
                    blocks={"M": {"d_state": 4, "dt_bc_norm": True, "dt_bc_norm_eps": 1e-6},
                            "A": {"n_heads": 2, "rope_base": None}, "F": {"d_hidden": 24},
                            "E": {"n_experts": 3, "top_k": 2, "d_hidden": 24, "renormalize": False}})
    perturb(ours).eval()
    to_transformers(ours, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "JambaForCausalLM"
    assert (hf.config.attn_layer_period, hf.config.attn_layer_offset) == (3, 2)
    check_same_function(hf, ours, 29, shapes=((2, 11),))
    again = from_transformers(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))


def test_export_native_mamba_stack(tmp_path):
    torch.manual_seed(0)
    ours = perturb(HybridLM(vocab_size=19, d_model=16, layout="MMMM", blocks={"M": {"d_state": 3}})).eval()
    to_transformers(ours, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "MambaForCausalLM" and hf.config.tie_word_embeddings
    check_same_function(hf, ours, 19, shapes=((2, 11),))


@pytest.mark.parametrize("layout,blocks,match", [
    ("MFAF", {"A": {"rope_base": 10000.0}}, "rope_base=null"),
    ("MFAF", {"A": {"rope_base": None}}, "dt_bc_norm=true"),
    ("MFMAF", {}, "alternates"),
    ("MFMFAFAFMF", {"M": {"dt_bc_norm": True}, "A": {"rope_base": None}}, "not periodic"),
    ("MEMF", {"M": {"dt_bc_norm": True}}, "renormalize=false"),
    ("MMMM", {"M": {"selective": False}}, "LTI"),
], ids=["rope", "no-dt-norm", "not-alternating", "not-periodic", "renormalised-moe", "lti-mamba"])
def test_export_says_why_a_stack_does_not_fit(layout, blocks, match):
    with torch.device("meta"):
        model = HybridLM(vocab_size=11, d_model=16, layout=layout, norm_eps=1e-6,
                         blocks={"A": {"n_heads": 2}, **{k: {**v} for k, v in blocks.items()}})
    with pytest.raises(UnsupportedConfig, match=match):
        to_transformers(model)


def test_export_rejects_blocks_that_differ():
    with torch.device("meta"):
        model = HybridLM(vocab_size=11, d_model=16, layout="MMM", layer_overrides={1: {"d_state": 8}})
    with pytest.raises(UnsupportedConfig, match=r"block 1 \(M\) has \{'d_state': 8\}"):
        to_transformers(model)


def test_unsupported_architectures(tmp_path):
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=11))
    with pytest.raises(UnsupportedConfig, match="model_type='llama'.*supported: MambaForCausalLM"):
        from_transformers(llama)
    llama.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedConfig, match="model_type='llama'"):
        from_transformers(tmp_path)
    with pytest.raises(UnsupportedConfig, match="hidden_act='gelu'"):
        from_transformers(tiny_mamba(hidden_act="gelu"))
    with pytest.raises(UnsupportedConfig, match="MambaModel"):
        from_transformers(transformers.MambaModel(tiny_mamba().config))


def test_bad_tensors_are_all_listed(tmp_path):
    """A mis-shaped, a missing and an extra tensor: one error naming each, and nothing loaded."""
    state = tiny_mamba(tie=False).state_dict()
    state["backbone.layers.1.mixer.x_proj.weight"] = torch.zeros(14, 48)
    del state["backbone.layers.2.mixer.D"]
    state["backbone.layers.0.mixer.extra"] = torch.zeros(3)
    hf = tiny_mamba(tie=False)
    hf.state_dict = lambda: state
    with pytest.raises(ConversionError) as err:
        from_transformers(hf)
    text = str(err.value)
    assert len(err.value.problems) == 3, text
    assert "'backbone.layers.1.mixer.x_proj.weight' is [14, 48]" in text and "[13, 48]" in text
    assert "missing in source: 'backbone.layers.2.mixer.D'" in text
    assert "unmapped source tensor: 'backbone.layers.0.mixer.extra'" in text


def test_tied_head_that_differs_is_an_error():
    hf = tiny_mamba(tie=False)
    hf.config.tie_word_embeddings = True  # the config says tied, the tensors disagree
    with pytest.raises(ConversionError, match="tied tensor differs: source 'lm_head.weight'"):
        from_transformers(hf)
