"""mamba-ssm checkpoint directories -> HybridLM (mamba-ssm itself needs CUDA, so its semantics are checked
against transformers' Mamba, which reads the same weights, and against mamba-ssm's MHA and GatedMLP forward
written out below from mamba_ssm/modules/mha.py and mlp.py)."""
import json

import pytest
import torch
import torch.nn.functional as F
from convert_models import causal_lm_loss, rel_err, tiny_mamba

from hybrid.convert import ConversionError, UnsupportedConfig, load_checkpoint

D, HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 24, 4, 2, 6, 128  # d_intermediate=40 rounds up to 128


def write_dir(path, config, state, as_bin=True):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if as_bin:
        torch.save(state, path / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file
        save_file(state, str(path / "model.safetensors"))
    return path


def mamba_ssm_config(**kw):
    cfg = dict(d_model=D, d_intermediate=0, n_layer=3, vocab_size=45, ssm_cfg={"d_state": 5, "d_conv": 3,
               "expand": 2, "dt_rank": 3}, attn_layer_idx=[], attn_cfg={}, rms_norm=True, residual_in_fp32=True,
               fused_add_norm=True, pad_vocab_size_multiple=8, tie_embeddings=True)
    return {**cfg, **kw}


def test_mamba_only_same_logits_as_transformers(tmp_path):
    """A mamba-ssm file is transformers' Mamba state with `embedding` for `embeddings`; vocab 45 pads to 48."""
    hf = tiny_mamba(hidden_size=D, vocab_size=48)
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    ours = load_checkpoint(write_dir(tmp_path, mamba_ssm_config(), state)).eval()
    assert ours.pattern == "MMM" and ours.vocab_size == 48 and ours.lm_head.weight is ours.embedding.weight
    tokens = torch.randint(0, 45, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, out = hf(tokens, labels=tokens), ours(tokens)
    assert rel_err(out.logits, theirs.logits) < 1e-5
    assert abs(causal_lm_loss(out.logits, tokens).item() - theirs.loss.item()) < 1e-5 * theirs.loss.item()


def hybrid_state(g):
    """A random mamba-ssm state for n_layer=2, attn_layer_idx=[1], d_intermediate=40, vocab 48, tied."""
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.3
    d_inner, d_state, dt_rank, qkv = 2 * D, 4, 2, HEAD_DIM * (HEADS + 2 * KV_HEADS)
    state = {"backbone.embedding.weight": r(48, D), "backbone.norm_f.weight": 1 + r(D)}
    for i in range(2):
        p = f"backbone.layers.{i}."
        state |= {p + "norm.weight": 1 + r(D), p + "norm2.weight": 1 + r(D),
                  p + "mlp.fc1.weight": r(2 * HIDDEN, D), p + "mlp.fc2.weight": r(D, HIDDEN)}
    p = "backbone.layers.0.mixer."
    state |= {p + "in_proj.weight": r(2 * d_inner, D), p + "conv1d.weight": r(d_inner, 1, 4),
              p + "conv1d.bias": r(d_inner), p + "x_proj.weight": r(dt_rank + 2 * d_state, d_inner),
              p + "dt_proj.weight": r(d_inner, dt_rank), p + "dt_proj.bias": r(d_inner) - 3,
              p + "A_log": r(d_inner, d_state), p + "D": r(d_inner), p + "out_proj.weight": r(D, d_inner)}
    p = "backbone.layers.1.mixer."
    state |= {p + "in_proj.weight": r(qkv, D), p + "in_proj.bias": r(qkv), p + "out_proj.weight": r(D, D),
              p + "out_proj.bias": r(D)}
    return state


def mha_reference(state, x):
    """mamba-ssm MHA forward (causal, rotary over the whole head, GQA), from its source: x [b, L, D]."""
    p = "backbone.layers.1.mixer."
    b, L, _ = x.shape
    qkv = F.linear(x, state[p + "in_proj.weight"], state[p + "in_proj.bias"])
    q, kv = qkv.split([HEADS * HEAD_DIM, 2 * KV_HEADS * HEAD_DIM], dim=-1)
    q, kv = q.view(b, L, HEADS, HEAD_DIM), kv.view(b, L, 2, KV_HEADS, HEAD_DIM)  # "(two hkv d)"
    k, v = kv.unbind(dim=2)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
    freqs = torch.outer(torch.arange(L).float(), inv_freq)[None, :, None]  # [1, L, 1, hd/2]
    cos, sin = freqs.cos(), freqs.sin()

    def rotate(t):  # flash-attn's non-interleaved rotary: halves (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos)
        t1, t2 = t.chunk(2, dim=-1)
        return torch.cat((t1 * cos - t2 * sin, t1 * sin + t2 * cos), dim=-1)

    q, k = rotate(q), rotate(k)
    k, v = (t.repeat_interleave(HEADS // KV_HEADS, dim=2) for t in (k, v))
    ctx = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return F.linear(ctx.transpose(1, 2).reshape(b, L, -1), state[p + "out_proj.weight"], state[p + "out_proj.bias"])


def gated_mlp_reference(state, i, x):
    """mamba-ssm GatedMLP: y, gate = fc1(x).chunk(2); fc2(y * silu(gate))."""
    y, gate = F.linear(x, state[f"backbone.layers.{i}.mlp.fc1.weight"]).chunk(2, dim=-1)
    return F.linear(y * F.silu(gate), state[f"backbone.layers.{i}.mlp.fc2.weight"])


def test_hybrid_with_attention_and_mlp(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = hybrid_state(g)
    config = mamba_ssm_config(n_layer=2, d_intermediate=40, attn_layer_idx=[1], ssm_cfg={"d_state": 4},
                              attn_cfg={"num_heads": HEADS, "num_heads_kv": KV_HEADS, "causal": True,
                                        "rotary_emb_dim": HEAD_DIM})
    ours = load_checkpoint(write_dir(tmp_path, config, state, as_bin=False)).eval()
    assert ours.pattern == "MFAF" and ours.layers[2].mixer.rope_base == 10000.0
    x = torch.randn(2, 13, D, generator=g)
    with torch.no_grad():
        assert rel_err(ours.layers[2].mixer(x), mha_reference(state, x)) < 1e-5
        for i, j in ((0, 1), (1, 3)):
            assert rel_err(ours.layers[j].mixer(x), gated_mlp_reference(state, i, x)) < 1e-5
            assert torch.equal(ours.layers[j].norm.weight, state[f"backbone.layers.{i}.norm2.weight"])
        assert torch.isfinite(ours(torch.randint(0, 48, (2, 13), generator=g)).logits).all()


def test_mamba2_same_logits_as_transformers(tmp_path):
    """A mamba-ssm Mamba2 file is transformers' Mamba2 state with `embedding` for `embeddings` (our S block)."""
    from test_convert_mamba2 import tiny_mamba2
    hf = tiny_mamba2(hidden_size=D, num_heads=8, head_dim=6, vocab_size=48, time_step_limit=(0.0, 0.4))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    ssm_cfg = {"layer": "Mamba2", "d_state": 6, "d_conv": 3, "expand": 2, "headdim": 6, "ngroups": 2,
               "chunk_size": 8, "dt_limit": [0.0, 0.4], "use_mem_eff_path": True}
    config = mamba_ssm_config(ssm_cfg=ssm_cfg, tie_embeddings=False)
    ours = load_checkpoint(write_dir(tmp_path, config, state, as_bin=False)).eval()
    assert ours.pattern == "SSS" and ours.layers[0].mixer.dt_limit == (0.0, 0.4)
    tokens = torch.randint(0, 45, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(ours(tokens).logits, hf(tokens).logits) < 1e-5


@pytest.mark.parametrize("change,match", [
    (dict(ssm_cfg={"layer": "Mamba3"}), "ssm_cfg.layer='Mamba3'"),
    (dict(ssm_cfg={"layer": "Mamba2", "d_ssm": 24}), "ssm_cfg.d_ssm=24"),
    (dict(rms_norm=False), "rms_norm=false"),
    (dict(attn_layer_idx=[1], attn_cfg={"num_heads": 4, "causal": True, "mlp_dim": 64}), "mlp_dim=64"),
    (dict(attn_layer_idx=[1], attn_cfg={"num_heads": 4}), "causal is false"),
    (dict(ssm_cfg={"d_state": 4, "mystery": 1}), r"unknown ssm_cfg keys \['mystery'\]"),
], ids=["mamba3", "mamba2-d-ssm", "layernorm", "mha-mlp", "non-causal", "unknown-key"])
def test_unsupported_configs(tmp_path, change, match):
    write_dir(tmp_path, mamba_ssm_config(**change), {"x": torch.zeros(1)})
    with pytest.raises(UnsupportedConfig, match=match):
        load_checkpoint(tmp_path)


def test_truncated_bin_names_the_file(tmp_path):
    hf = tiny_mamba(hidden_size=D, vocab_size=48)
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    write_dir(tmp_path, mamba_ssm_config(), state)
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="(?s)pytorch_model.bin.*truncated or corrupted"):
        load_checkpoint(tmp_path)
