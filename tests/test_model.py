"""HybridLM: built from every model config, forward shapes, tied weights, per-layer overrides."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hybrid.model import HybridLM

CONF = str(Path(__file__).parents[1] / "conf")
MODELS = sorted(p.stem for p in (Path(CONF) / "model").glob("*.yaml") if not p.stem.startswith("_") and p.stem != "from_checkpoint")  # needs a path: tests/convert


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_builds(name):
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("describe", overrides=[f"model={name}"])
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert isinstance(model, HybridLM) and len(model.layers) == len(model.pattern)
    assert model.flops_per_token(1024) > model.flops_per_token(64) > 0 or "A" not in model.pattern


def test_forward_shapes_aux_and_tied_head():
    torch.manual_seed(0)
    model = HybridLM(vocab_size=11, d_model=16, layout="MEAF",
                     blocks={"M": {"d_state": 4}, "A": {"n_heads": 2}, "E": {"n_experts": 3, "top_k": 1}})
    out = model(torch.randint(0, 11, (2, 9)))
    assert out.logits.shape == (2, 9, 11)
    assert out.aux_loss.dim() == 0 and out.aux_loss > 0
    assert list(out.expert_counts) == [1] and out.expert_counts[1].sum() == 18
    assert model.lm_head.weight is model.embedding.weight


def test_layer_overrides_change_only_that_layer():
    model = HybridLM(vocab_size=8, d_model=16, layout="MFMF", blocks={"M": {"d_state": 4}},
                     layer_overrides={2: {"selective": False}})
    assert model.layers[0].mixer.selective and not model.layers[2].mixer.selective


def test_layer_override_out_of_range():
    with pytest.raises(ValueError, match="layer_overrides index 9"):
        HybridLM(vocab_size=8, d_model=16, layout="MF", layer_overrides={9: {"selective": False}})


def test_same_seed_same_model():
    def build():
        torch.manual_seed(3)
        return HybridLM(vocab_size=8, d_model=16, layout="MAF", blocks={"A": {"n_heads": 2}})
    a, b = build(), build()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
