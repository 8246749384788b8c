"""Our checkpoint format: save/load bit for bit, `model=from_checkpoint` from Hydra, the CLI, and damaged files."""
import json
from pathlib import Path

import pytest
import torch
from convert_models import perturb, rel_err, tiny_jamba, transformers
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hybrid.convert import ConversionError, from_transformers, load_checkpoint, save_checkpoint
from hybrid.convert.__main__ import main
from hybrid.model import HybridLM

CONF = str(Path(__file__).parents[2] / "conf")


def native(tie=True):
    torch.manual_seed(0)
    model = HybridLM(vocab_size=23, d_model=16, layout="MEAF", tie_embeddings=tie, residual_in_fp32=True,
                     blocks={"M": {"d_state": 4, "dt_bc_norm": True}, "A": {"n_heads": 2},
                             "E": {"n_experts": 3, "top_k": 1}}, layer_overrides={0: {"d_conv": 3}})
    return perturb(model).eval()


def assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_save_load_bit_for_bit(tmp_path, tie):
    model = native(tie)
    save_checkpoint(model, tmp_path, source={"from": "test"})
    config = json.loads((tmp_path / "hybrid_config.json").read_text())
    assert config["pattern"] == "MEAF" and config["model"]["layout"] == "MEAF" and config["source"] == {"from": "test"}
    loaded = load_checkpoint(tmp_path).eval()
    assert_same(model, loaded)
    assert (loaded.lm_head.weight is loaded.embedding.weight) == tie and loaded.residual_in_fp32
    assert loaded.layers[0].mixer.d_conv == 3 and loaded.layers[0].mixer.dt_bc_norm
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, loaded(tokens).logits)


def test_dtype_kept_or_converted(tmp_path):
    save_checkpoint(native().to(torch.bfloat16), tmp_path)
    assert load_checkpoint(tmp_path, dtype=None).embedding.weight.dtype == torch.bfloat16
    assert load_checkpoint(tmp_path).embedding.weight.dtype == torch.float32


def test_hydra_model_from_checkpoint(tmp_path):
    model = native()
    save_checkpoint(model, tmp_path)
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("describe", overrides=["model=from_checkpoint", f"model.path={tmp_path}",
                                             "+model.blocks.M.scan_backend=sequential"])
        bad = compose("describe", overrides=["model=from_checkpoint", f"model.path={tmp_path}",
                                             "model.vocab_size=99"])
    loaded = instantiate(cfg.model)
    assert_same(model, loaded)
    assert loaded.layers[0].mixer.scan_backend == "sequential"
    with pytest.raises(Exception, match="vocab_size=99 was asked for but checkpoint .* has vocab_size=23"):
        instantiate(bad.model)


def test_cli_both_directions(tmp_path):
    hf = tiny_jamba()
    hf.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    ours = load_checkpoint(tmp_path / "ours").eval()
    assert json.loads((tmp_path / "ours" / "hybrid_config.json").read_text())["source"]["format"] == "jamba"
    tokens = torch.randint(0, 53, (2, 9))
    with torch.no_grad():
        assert rel_err(ours(tokens).logits, hf(tokens).logits) < 1e-5
    assert main([str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "transformers"]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert all(torch.equal(a, hf.state_dict()[k]) for k, a in back.state_dict().items())


def test_converted_checkpoint_round_trips(tmp_path):
    ours = from_transformers(tiny_jamba())
    save_checkpoint(ours, tmp_path)
    assert_same(ours, load_checkpoint(tmp_path))


def rewrite(path: Path, state: dict):
    from safetensors.torch import save_file
    save_file(state, str(path / "model.safetensors"))


def test_truncated_checkpoint_names_the_lost_tensors(tmp_path):
    save_checkpoint(native(), tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-300])  # the last tensors' bytes are gone
    with pytest.raises(ConversionError, match=r"truncated: tensor 'norm.weight'") as err:
        load_checkpoint(tmp_path)
    assert all("truncated" in p for p in err.value.problems)
    weights.write_bytes(data[:5])
    with pytest.raises(ConversionError, match="too short for a safetensors header"):
        load_checkpoint(tmp_path)
    weights.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(ConversionError, match="corrupted header"):
        load_checkpoint(tmp_path)


def test_missing_extra_and_misshaped_tensors_all_named(tmp_path):
    model = native()
    save_checkpoint(model, tmp_path)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    del state["layers.1.mixer.experts.2.up_proj.weight"]
    state["layers.2.mixer.q_proj.weight"] = torch.zeros(16, 15)
    state["layers.9.norm.weight"] = torch.zeros(16)
    rewrite(tmp_path, state)
    with pytest.raises(ConversionError) as err:
        load_checkpoint(tmp_path)
    text = str(err.value)
    assert len(err.value.problems) == 3, text
    assert "missing in source: 'layers.1.mixer.experts.2.up_proj.weight'" in text
    assert "'layers.2.mixer.q_proj.weight' is [16, 15]" in text and "[16, 16]" in text
    assert "unmapped source tensor: 'layers.9.norm.weight'" in text


def test_not_a_checkpoint(tmp_path):
    for load in (load_checkpoint, from_transformers):
        with pytest.raises(FileNotFoundError, match="not a local directory.*huggingface-cli download"):
            load(tmp_path / "state-spaces" / "mamba-130m-hf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"holds no checkpoint.*\['notes.txt'\]"):
        load_checkpoint(tmp_path)
    (tmp_path / "hybrid_config.json").write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ConversionError, match="format 'something-else'"):
        load_checkpoint(tmp_path)
