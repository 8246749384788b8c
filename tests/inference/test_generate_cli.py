"""`python -m hybrid.generate`: a run directory's checkpoint answers task prompts (its answers are the full
forward's argmax at the answer positions), a converted checkpoint samples from a text prompt, bad input is named."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hybrid.convert import save_checkpoint
from hybrid.generate import run
from hybrid.model import HybridLM
from hybrid.tasks import IGNORE_INDEX, MQARConfig

CONF = str(Path(__file__).parents[2] / "conf")
ROOT = Path(__file__).parents[2]


def fake_run(tmp_path) -> Path:
    """A run directory as hybrid.train leaves it: config.yaml (model + task) and a Lightning last.ckpt."""
    model_cfg = dict(_target_="hybrid.model.HybridLM", vocab_size=32, d_model=16, layout="MAF",
                     blocks={"M": {"d_state": 4}, "A": {"n_heads": 2}})
    task_cfg = dict(_target_="hybrid.tasks.mqar.MQARConfig", vocab_size=32, num_kv_pairs=4, train_length=24,
                    eval_lengths=[24])
    (tmp_path / "checkpoints").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": model_cfg, "task": task_cfg}), tmp_path / "config.yaml")
    torch.manual_seed(0)
    model = HybridLM(**{k: v for k, v in model_cfg.items() if k != "_target_"})
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "checkpoints" / "last.ckpt")
    return tmp_path


def config(*overrides):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("generate", overrides=list(overrides))


def test_task_answers_of_a_run_are_the_forward_argmax(tmp_path, capsys):
    run_dir = fake_run(tmp_path)
    result = run(config(f"run_dir={run_dir}", "prompt_task=mqar", "num_samples=3", "device=cpu"))
    from hybrid.generate import load_run
    model = load_run(run_dir)[0].eval()
    inputs, targets = MQARConfig(vocab_size=32, num_kv_pairs=4, train_length=24, eval_lengths=[24]).generate(
        seed=0, split="test", step=0, batch_size=3, length=24)
    with torch.no_grad():
        argmax = model(inputs).logits.argmax(-1)
    mask = targets != IGNORE_INDEX
    assert [r[0] for r in result["rows"]] == [argmax[i][mask[i]].tolist() for i in range(3)]
    assert [r[1] for r in result["rows"]] == [targets[i][mask[i]].tolist() for i in range(3)]
    assert result["accuracy"] == pytest.approx((argmax == targets)[mask].float().mean().item())
    out = capsys.readouterr().out
    assert "sample 2: predicted" in out and "accuracy" in out


def test_converted_checkpoint_samples_from_text_on_the_command_line(tmp_path):
    torch.manual_seed(0)
    model = HybridLM(vocab_size=256, d_model=16, layout="MF", blocks={"M": {"d_state": 4}})
    save_checkpoint(model, tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "hybrid.generate", "model=from_checkpoint", f"model.path={tmp_path / 'ckpt'}",
           "prompt='def fib(n):'", "max_new_tokens=5", "num_samples=2", "temperature=0.8", "top_k=20", "device=cpu"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("--- sample") == 2 and "def fib(n):" in done.stdout
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert again.stdout == done.stdout  # seeded


def test_token_prompt_greedy_equals_model_generate(tmp_path):
    run_dir = fake_run(tmp_path)
    result = run(config(f"run_dir={run_dir}", "prompt_tokens=[3,1,4]", "max_new_tokens=6", "num_samples=1"))
    from hybrid.generate import load_run
    want = load_run(run_dir)[0].eval().generate(torch.tensor([[3, 1, 4]]), 6)[0, 3:].tolist()
    assert result["samples"] == [want]


@pytest.mark.parametrize("overrides,match", [
    (["prompt=hi"], "needs vocab_size >= 256"),
    (["prompt_task=nope"], "prompt_task='nope' is not a task"),
    (["prompt=hi", "prompt_tokens=[1]"], "exactly one of"),
    (["prompt_tokens=[99]"], "ids in 0..31"),
])
def test_bad_input_is_named(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        run(config(f"run_dir={fake_run(tmp_path)}", *overrides))


def test_no_model_is_named():
    with pytest.raises(ValueError, match="give run_dir=DIR"):
        run(config("prompt_tokens=[1]"))


def test_a_trained_run_answers_task_prompts(tmp_path):
    """hybrid.train leaves a run directory; hybrid.generate reads its checkpoint and config (task included)."""
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "hybrid.train", "experiment=smoke", "task=mqar", "trainer.max_steps=2",
             "task.train_length=32", "task.eval_lengths=[32]", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = run(config(f"run_dir={run_dir}", "prompt_task=mqar", "num_samples=2", "device=cpu"))
    assert len(result["rows"]) == 2 and all(len(pred) == len(truth) > 0 for pred, truth in result["rows"])
    assert 0 <= result["accuracy"] <= 1
