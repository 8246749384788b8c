"""The recurrent inference path equals the parallel forward: step-by-step decoding, prefill + steps and chunked
prefill give the parallel logits at every position (fp32, relative error <= 1e-5), for every block kind and every
model config in conf/model/ (shrunk)."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hybrid.model import HybridLM

CONF = str(Path(__file__).parents[2] / "conf")
MODELS = sorted(p.stem for p in (Path(CONF) / "model").glob("*.yaml")
                if not p.stem.startswith("_") and p.stem != "from_checkpoint")
TOL = 1e-5
VOCAB = 13


def perturb(model, seed=0, scale=0.1):
    """Noise on every parameter (norm weights off 1, biases off 0), so that a skipped term changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def config_model(name: str) -> HybridLM:
    """conf/model/<name>.yaml at width 16 with small blocks."""
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("describe", overrides=[f"model={name}", f"model.vocab_size={VOCAB}", "model.d_model=16",
                                             "model.blocks.M.d_state=4", "model.blocks.A.n_heads=2",
                                             "model.blocks.F.d_hidden=24", "model.blocks.E.d_hidden=24",
                                             "model.blocks.S.d_state=4", "model.blocks.S.headdim=8",
                                             "model.blocks.S.chunk_size=16"])
    torch.manual_seed(0)
    return perturb(instantiate(cfg.model))


BLOCKS = {  # every mixer kind and variant, each between MLPs so that the stream is mixed
    "mamba": ("MF", {"M": {"d_state": 5, "d_conv": 3}}),
    "mamba-lti": ("MF", {"M": {"selective": False}}),
    "mamba-no-gate": ("MF", {"M": {"gate": False}}),
    "mamba-dt-bc-norm": ("MF", {"M": {"dt_bc_norm": True, "conv_bias": False, "bias": True}}),
    "attention-rope-gqa": ("AF", {"A": {"n_heads": 4, "n_kv_heads": 2}}),
    "attention-no-rope": ("AF", {"A": {"n_heads": 2, "rope_base": None, "bias": True}}),
    "attention-partial-rope": ("AF", {"A": {"n_heads": 2, "rope_fraction": 0.5}}),
    "moe": ("ME", {"E": {"n_experts": 3, "top_k": 2}}),
    "mlp": ("F", {}),
    "mlp-relu2": ("F", {"F": {"activation": "relu2"}}),
    "mamba2": ("SF", {"S": {"d_state": 4, "headdim": 8, "chunk_size": 16}}),
    "mamba2-groups": ("SF", {"S": {"d_state": 4, "headdim": 4, "ngroups": 2, "chunk_size": 8, "rmsnorm": False}}),
}


def block_model(kind: str) -> HybridLM:
    layout, blocks = BLOCKS[kind]
    torch.manual_seed(1)
    return perturb(HybridLM(vocab_size=VOCAB, d_model=16, layout=layout, blocks=blocks))


def assert_close_per_position(got, want):
    """got, want [batch, L, vocab]: the relative error at every position is <= TOL."""
    assert got.shape == want.shape
    err = (got.double() - want.double()).norm(dim=(0, 2)) / want.double().norm(dim=(0, 2))
    assert err.max().item() <= TOL, f"worst position {err.argmax().item()}: relative error {err.max().item():.2e}"


def decode_steps(model, tokens, cache):
    """Logits [batch, L, vocab] of tokens [batch, L] fed one at a time through model.step."""
    return torch.stack([model.step(tokens[:, t], cache) for t in range(tokens.shape[1])], dim=1)


def chunked_prefill(model, tokens, chunk):
    cache = model.allocate_inference_cache(tokens.shape[0], tokens.shape[1])
    out = torch.cat([model(tokens[:, s:s + chunk], cache).logits for s in range(0, tokens.shape[1], chunk)], 1)
    assert cache.seqlen == tokens.shape[1]
    return out


def check_all_paths(model, L, chunks=(1, 7, 64)):
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, VOCAB, (2, L), generator=g).to(next(model.parameters()).device)
    with torch.no_grad():
        want = model(tokens).logits
        assert_close_per_position(model(tokens, logits_to_keep=3).logits, want[:, -3:])
        assert_close_per_position(decode_steps(model, tokens, model.allocate_inference_cache(2, L)), want)
        cache = model.allocate_inference_cache(2, L)  # prefill a prompt, then steps
        split = L // 3
        got = torch.cat([model(tokens[:, :split], cache).logits, decode_steps(model, tokens[:, split:], cache)], 1)
        assert_close_per_position(got, want)
        for chunk in chunks:
            assert_close_per_position(chunked_prefill(model, tokens, chunk), want)


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_every_block_kind_decodes_like_the_parallel_forward(kind):
    check_all_paths(block_model(kind), L=70)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_decodes_like_the_parallel_forward(name):
    check_all_paths(config_model(name), L=70)


def test_cache_sizes_mamba_constant_attention_grows():
    mamba, attn = block_model("mamba"), block_model("attention-rope-gqa")
    m = [mamba.allocate_inference_cache(3, n).nbytes() for n in (16, 1024)]
    a = [attn.allocate_inference_cache(3, n).nbytes() for n in (16, 1024)]
    assert m[0] == m[1] > 0 and a[1] - 8 == 64 * (a[0] - 8)  # 8: the int64 length
    kv = attn.allocate_inference_cache(3, 16).layers[0]
    assert kv.k.shape == (3, 2, 16, 4)  # grouped: n_kv_heads=2 of n_heads=4, never repeated
    mc = mamba.allocate_inference_cache(3, 16).layers[0]
    assert mc.conv_state.shape == (3, 32, 3) and mc.ssm_state.shape == (3, 32, 5)
    assert mc.ssm_state.dtype == torch.float32


def test_kv_cache_overflow_is_a_clear_error():
    model = block_model("attention-rope-gqa")
    cache = model.allocate_inference_cache(1, 8)
    with torch.no_grad():
        model(torch.zeros(1, 6, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="max_seqlen=8 tokens; 6 are cached and 3 more"):
            model(torch.zeros(1, 3, dtype=torch.long), cache)


def test_cache_reset_starts_over():
    model = block_model("attention-rope-gqa")
    tokens = torch.randint(0, VOCAB, (2, 9))
    cache = model.allocate_inference_cache(2, 9)
    with torch.no_grad():
        first = model(tokens, cache).logits
        cache.reset()
        assert cache.seqlen == 0
        assert torch.equal(model(tokens, cache).logits, first)
