"""Training end to end on tiny configs: every experiment composes and trains, runs are reproducible, records
are complete, a killed run resumes to the same metrics, bad checkpoints and NaNs fail loudly."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from hybrid.train import train

ROOT = Path(__file__).parents[1]
CONF = str(ROOT / "conf")
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
TINY = ["experiment=smoke"]


def config(run_dir, *overrides):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"run_dir={run_dir}"])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_trains(experiment, tmp_path):
    # each experiment as written, shrunk to a couple of steps of a tiny model
    cfg = config(tmp_path, f"experiment={experiment}", "trainer.max_steps=2", "trainer.val_check_interval=1",
                 "data.batch_size=2", "data.eval_batches=1", "data.eval_batch_size=2", "model.d_model=16",
                 "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false")
    result = train(cfg)
    assert result["status"] == "completed" and result["step"] == 2


def test_record_and_result(tmp_path):
    result = train(config(tmp_path, *TINY))
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["status"] == "completed" and record["pattern"] == result["pattern"] == "MAF"
    assert record["seed"] == 0 and record["config"]["model"]["d_model"] == 16
    assert record["versions"]["torch"] and record["hardware"]["cpu"]
    assert record["backends"]["selective_scan"] == ["reference"] and record["backends"]["attention"] == ["sdpa"]
    assert "commit" in record["git"] and record["start_time"] <= record["end_time"]
    assert not any(k.lower() in {"environ", "env", "environment"} for k in record)
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "config.yaml").exists()
    assert set(result["metrics"]) >= {"val/acc_L64", "val/loss_L64", "val/acc_L128"}


def test_same_seed_same_metrics(tmp_path):
    a = train(config(tmp_path / "a", *TINY))["metrics"]
    b = train(config(tmp_path / "b", *TINY))["metrics"]
    c = train(config(tmp_path / "c", *TINY, "seed=1"))["metrics"]
    assert a == b and a != c


def test_corrupted_checkpoint_is_an_error(tmp_path):
    train(config(tmp_path, *TINY))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="is corrupted"):
        train(config(tmp_path, *TINY))


def test_nan_loss_fails_with_reason(tmp_path):
    with pytest.raises(FloatingPointError, match="at step"):
        train(config(tmp_path, *TINY, "lit.optimizer.lr=inf", "checkpoint_every=1"))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and "last good checkpoint" in result["reason"]


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    steps = ["trainer.max_steps=40", "checkpoint_every=5", "trainer.val_check_interval=20"]
    reference = train(config(tmp_path / "whole", *TINY, *steps))["metrics"]
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hybrid.train", *TINY, *steps, f"run_dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run past the checkpoint, into steps that must be redone
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (run_dir / "result.json").exists(), "the run was not killed in the middle"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from"].endswith("last.ckpt")
    assert result["metrics"] == reference


def test_record_lists_only_the_backends_of_its_own_run(tmp_path):
    # another backend ran earlier in this process (as another test, or a notebook cell, would have it run)
    import torch

    from hybrid.kernels.selective_scan import selective_scan
    b, d, n, length = 1, 3, 2, 5
    selective_scan(torch.randn(b, d, length), torch.rand(b, d, length), -torch.rand(d, n), torch.randn(b, n, length),
                   torch.randn(b, n, length), backend="sequential")
    train(config(tmp_path, *TINY))
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["backends"]["selective_scan"] == ["reference"]


def test_progress_bar_refreshes_every_so_many_steps(tmp_path):
    """Each refresh reads the logged metrics (a host sync): the bar refreshes every progress_bar_every steps."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from hybrid.train import progress_bar
    bars = progress_bar(config(tmp_path, "progress_bar_every=7"))
    assert len(bars) == 1 and isinstance(bars[0], TQDMProgressBar) and bars[0].refresh_rate == 7
    assert progress_bar(config(tmp_path, "trainer.enable_progress_bar=false")) == []
    with pytest.raises(ValueError, match="progress_bar_every=0"):
        progress_bar(config(tmp_path, "progress_bar_every=0"))
