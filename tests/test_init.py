"""HybridLM's default init (init_weights): every weight at the scale of its fan-in, at any width."""
import math

import pytest
import torch

from hybrid.model import HybridLM


@pytest.mark.parametrize("d_model", [32, 128])
def test_embedding_and_linear_weights_at_fan_in_scale(d_model):
    """The embedding (tied LM head) at 1/sqrt(d_model), not 0.02: a 0.02 embedding is drowned in the residual
    stream by the fan-in sublayers' outputs, and MFAF stalled on MQAR's plateau (init_weights' docstring)."""
    torch.manual_seed(0)
    model = HybridLM(vocab_size=512, d_model=d_model, layout="AF")
    emb = model.embedding.weight
    assert model.lm_head.weight is emb
    assert emb.std().item() == pytest.approx(d_model ** -0.5, rel=0.05)
    q = model.layers[0].mixer.q_proj.weight  # [d_model, d_model]: fan-in d_model
    assert q.std().item() == pytest.approx(d_model ** -0.5, rel=0.05)
    out = model.layers[0].mixer.o_proj.weight  # a residual output: / sqrt(2 sublayers)
    assert out.std().item() == pytest.approx(d_model ** -0.5 / math.sqrt(2), rel=0.05)


def test_tied_logits_start_at_unit_scale():
    """Tied head over the final RMSNorm: logits' std about 1 at init, whatever the width."""
    torch.manual_seed(0)
    for d_model in (32, 256):
        model = HybridLM(vocab_size=256, d_model=d_model, layout="F")
        logits = model(torch.randint(0, 256, (4, 64))).logits
        assert 0.7 < logits.std().item() < 1.4


def test_init_std_number_draws_every_weight_from_it():
    torch.manual_seed(0)
    model = HybridLM(vocab_size=512, d_model=64, layout="AF", init_std=0.02)
    assert model.embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.layers[0].mixer.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("d_model", [32, 128])
def test_untied_embedding_at_unit_scale_and_logits_too(d_model):
    """Untied (the configs' default): the embedding at normal(0, 1), a token at the scale of the normalized
    stream every sublayer reads (AFAF stalled on MQAR with the tied 1/sqrt(d_model) one); the head at fan-in
    scale, so the logits still start at unit scale."""
    torch.manual_seed(0)
    model = HybridLM(vocab_size=512, d_model=d_model, layout="AF", tie_embeddings=False)
    assert model.lm_head.weight is not model.embedding.weight
    assert model.embedding.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx(d_model ** -0.5, rel=0.05)
    logits = model(torch.randint(0, 512, (4, 64))).logits
    assert 0.7 < logits.std().item() < 1.4


def test_model_configs_untie_the_embedding():
    """conf/model/_base.yaml unties the embedding, so the configs draw it at unit scale; `demo` (MAF) stays tied."""
    from pathlib import Path

    from omegaconf import OmegaConf
    conf = Path(__file__).parents[1] / "conf" / "model"
    assert OmegaConf.load(conf / "_base.yaml").tie_embeddings is False
    assert OmegaConf.load(conf / "demo.yaml").tie_embeddings is True
