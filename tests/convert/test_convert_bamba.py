"""transformers' BambaForCausalLM <-> HybridLM stacks of (S | A) + F layers: the same logits and loss (fp32, rel err
<= 1e-5; its attention rotates half of each head: rope_fraction 0.5), export and back bit for bit, and errors."""
import pytest
import torch
from convert_models import check_export_round_trip, check_same_function, perturb, rel_err, transformers

from hybrid.convert import UnsupportedConfig, from_transformers, to_transformers
from hybrid.model import HybridLM

TOL = 1e-5


def tiny_bamba(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(hidden_size=16, num_hidden_layers=3, attn_layer_indices=[1], vocab_size=37, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=24, mamba_n_heads=4, mamba_d_head=8, mamba_d_state=6,
                mamba_n_groups=2, mamba_d_conv=3, mamba_chunk_size=8, use_mamba_kernels=False)
    cfg = transformers.BambaConfig(**{**args, **kw})
    return perturb(transformers.BambaForCausalLM(cfg), seed).eval()


@pytest.mark.parametrize("kw,pattern", [
    ({}, "SFAFSF"),
    (dict(attn_layer_indices=[0, 2], mamba_n_groups=1, mamba_proj_bias=True, attention_bias=True, mlp_bias=True,
          time_step_limit=(0.01, 0.3)), "AFSFAF"),
], ids=["bamba", "bias-limits"])
def test_same_logits_and_loss(kw, pattern):
    hf = tiny_bamba(**kw)
    ours = from_transformers(hf).eval()
    assert ours.pattern == pattern
    attn = next(layer.mixer for layer in ours.layers if layer.symbol == "A")
    assert attn.rope_fraction == 0.5 and attn.rope_dim == 4
    check_same_function(hf, ours, 37, shapes=((2, 19), (1, 8)))


def test_export_and_back_bit_for_bit(tmp_path):
    hf = tiny_bamba()
    ours = from_transformers(hf)
    back = check_export_round_trip(hf, ours, tmp_path, 37, "BambaForCausalLM")
    assert back.config.attn_layer_indices == [1]


def test_partial_rope_rotates_only_the_first_channels():
    from hybrid.blocks.attention import Attention
    torch.manual_seed(0)
    full, half = Attention(16, n_heads=2), Attention(16, n_heads=2, rope_fraction=0.5)
    x = torch.randn(1, 5, 16)
    half.load_state_dict(full.state_dict())
    q_full, q_half = full._qkv(x)[0], half._qkv(x)[0]  # [1, heads, 5, 8]
    raw = full.q_proj(x).view(1, 5, 2, 8).transpose(1, 2)
    assert torch.equal(q_half[..., 4:], raw[..., 4:]) and not torch.allclose(q_half[..., :4], raw[..., :4])
    assert not torch.allclose(q_half, q_full)
    with pytest.raises(ValueError, match="rope_fraction=0 must lie in"):
        Attention(16, n_heads=2, rope_fraction=0)


@pytest.mark.parametrize("blocks,match", [
    ({"A": {"n_heads": 2, "rope_fraction": 0.25}}, "rope_fraction=0.5"),  # whole heads export to Granite
    ({"A": {"n_heads": 2, "rope_fraction": 0.5}, "S": {"headdim": 8, "norm_before_gate": True}},
     "norm_before_gate=True"),
], ids=["quarter-rope", "norm-first"])
def test_export_says_why_it_does_not_fit(blocks, match):
    with torch.device("meta"):
        model = HybridLM(vocab_size=11, d_model=16, layout="SFAF", blocks={"S": {"headdim": 8}, **blocks})
    with pytest.raises(UnsupportedConfig, match=match):
        to_transformers(model)


def test_partial_rope_decodes_like_the_parallel_forward():
    torch.manual_seed(0)
    model = perturb(HybridLM(vocab_size=13, d_model=16, layout="SFAF",
                             blocks={"S": {"d_state": 4, "headdim": 8, "chunk_size": 4},
                                     "A": {"n_heads": 2, "rope_fraction": 0.5}})).eval()
    tokens = torch.randint(0, 13, (2, 9))
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.allocate_inference_cache(2, 9)
        steps = torch.stack([model.step(tokens[:, t], cache) for t in range(9)], dim=1)
    assert rel_err(steps, full) < TOL
