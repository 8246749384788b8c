"""Runs that never lie and never lose work (issue 13): atomic checkpoints, no NaN saved as good, one process per
run directory, signals exit 130/143 naming the signal, config drift refused unless resume=force, a second
sweep keeps the first's summary, usage errors exit 2 with one paragraph and no traceback."""
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from hybrid import rundir, train
from hybrid.checks import UsageError

ROOT = Path(__file__).parents[1]
TINY = ["experiment=smoke"]


def config(run_dir, *overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides, f"run_dir={run_dir}"])


def hydra_main(monkeypatch, module, *args):
    """python -m <module> ARGS in this process; returns the exit status. The logging handlers Hydra installs
    (bound to this test's captured streams) are removed afterwards, so no later test logs into a closed stream."""
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    GlobalHydra.instance().clear()
    handlers = {name: list(logging.getLogger(name).handlers) for name in ("", "hydra")}
    try:
        module.main()
    except SystemExit as e:
        return e.code
    finally:
        GlobalHydra.instance().clear()
        for name, kept in handlers.items():
            logging.getLogger(name).handlers[:] = kept
    return 0


def checkpoint_step(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """The run dir on another filesystem than $TMPDIR, and the disk full while the second checkpoint is written:
    last.ckpt must still be the first checkpoint, whole."""
    ckpt_dir = tmp_path / "checkpoints"
    last = ckpt_dir / "last.ckpt"

    def in_ckpt_dir(path) -> bool:
        return Path(path).resolve().parent == ckpt_dir.resolve()

    real_rename, real_copyfile, real_fsync = os.rename, shutil.copyfile, os.fsync

    def rename(src, dst, *a, **k):  # a move into the run dir from elsewhere crosses filesystems
        if in_ckpt_dir(dst) and not in_ckpt_dir(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *a, **k)

    def copyfile(src, dst, *a, **k):  # the copy over the old file runs out of space half way
        if in_ckpt_dir(dst) and Path(dst).exists():
            Path(dst).write_bytes(Path(src).read_bytes()[: Path(src).stat().st_size // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copyfile(src, dst, *a, **k)

    def fsync(fd):  # a write in the run dir's own filesystem runs out of space too
        target = os.readlink(f"/proc/self/fd/{fd}")
        if in_ckpt_dir(target) and last.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        train.train(config(tmp_path, "trainer.max_steps=4", "checkpoint_every=2"))
    assert checkpoint_step(last) == 2, "the only good checkpoint was damaged"
    assert [p.name for p in ckpt_dir.iterdir()] == ["last.ckpt"], "a temporary file was left behind"
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


def test_a_nan_is_never_saved_as_the_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError) as info:
        train.train(config(tmp_path, "lit.optimizer.lr=inf", "checkpoint_every=1"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    reason = json.loads((tmp_path / "result.json").read_text())["reason"]
    assert reason == str(info.value)
    if last.exists():
        state = torch.load(last, weights_only=True, map_location="cpu")["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), reason
        assert f"last good checkpoint: {last}" in reason
    else:
        assert "last good checkpoint: none" in reason


def test_a_second_process_on_a_run_dir_names_the_holder_and_exits_non_zero(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("pid 999999999 on a-dead-host\n")  # stale: nobody holds the lock
    held = rundir.lock(run_dir)  # a live run (this process, on another open file)
    try:
        with pytest.raises(rundir.RunDirBusy, match=f"pid {os.getpid()}"):
            train.train(config(run_dir))
        code = hydra_main(monkeypatch, train, *TINY, f"hydra.run.dir={run_dir}", "hydra/job_logging=none",
                          "hydra/hydra_logging=none")
        assert code == train.BUSY_EXIT
        assert not (run_dir / "result.json").exists() and not (run_dir / "metrics.csv").exists()
    finally:
        held.close()
    assert train.train(config(run_dir))["status"] == "completed"  # released: the next run takes it


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_exits_128_plus_its_number_naming_it(tmp_path, signum):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "hybrid.train", *TINY, "trainer.max_steps=100000", "trainer.val_check_interval=1000",
           "checkpoint_every=1000", f"run_dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (run_dir / "metrics.csv").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    name = signal.Signals(signum).name
    assert result["status"] == "failed" and name in result["reason"] and result["signal"] == name
    assert json.loads((run_dir / "record.json").read_text())["status"] == "failed"


def test_config_drift_on_resume_is_refused_unless_forced(tmp_path):
    train.train(config(tmp_path))
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(UsageError, match=r"lit\.optimizer\.lr: 0\.003 -> 0\.002.*resume=force"):
        train.train(config(tmp_path, "lit.optimizer.lr=0.002"))
    assert (tmp_path / "config.yaml").read_text() == before
    # evaluation-only keys may change
    assert train.train(config(tmp_path, "task.eval_lengths=[64]"))["status"] == "completed"
    result = train.train(config(tmp_path, "lit.optimizer.lr=0.002", "resume=force"))
    record = json.loads((tmp_path / "record.json").read_text())
    assert result["status"] == "completed" and record["resume"] == "force"
    assert record["config_changes"] == ["lit.optimizer.lr: 0.003 -> 0.002"]


def test_a_second_sweep_keeps_the_first_sweeps_summary(tmp_path):
    from hybrid.sweep.summary import SweepSummary

    def sweep_config(task_overrides):
        return OmegaConf.create({"hydra": {
            "sweep": {"dir": str(tmp_path), "subdir": "${run_name:${hydra:job.override_dirname}}"},
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
            "overrides": {"task": task_overrides},
            "job": {"config": {"override_dirname": {"exclude_keys": ["run_dir"], "item_sep": ",", "kv_sep": "="}}}}})

    for point, status in [("seed=0", "completed"), ("seed=1", "failed")]:
        (tmp_path / point).mkdir()
        (tmp_path / point / "result.json").write_text(json.dumps({"status": status, "reason": "x"}))
    SweepSummary().on_multirun_end(sweep_config(["seed=0"]))
    first = (tmp_path / "summary.md").read_text()
    SweepSummary().on_multirun_end(sweep_config(["seed=1"]))
    kept = [p for p in tmp_path.glob("summary*.md") if p.read_text() == first]
    assert kept, "the first sweep's summary was overwritten"
    assert "1 completed" in first and "1 failed" in (tmp_path / "summary.md").read_text()


BAD_TRAIN = [("lit.optimizer.lr=-1", "lit.optimizer.lr=-1"), ("trainer.val_check_interval=0", "val_check_interval=0"),
             ("seed=abc", "seed='abc'"), ("model.d_model=0", "model.d_model=0"),
             ("model.blocks.M.d_state=0", "model.blocks.M.d_state=0"), ("resume=maybe", "resume='maybe'")]


@pytest.mark.parametrize(("override", "named"), BAD_TRAIN, ids=[o for o, _ in BAD_TRAIN])
def test_usage_errors_of_train_exit_2_before_anything_is_written(tmp_path, monkeypatch, capsys, override, named):
    run_dir = tmp_path / "run"
    code = hydra_main(monkeypatch, train, *TINY, override, f"hydra.run.dir={run_dir}", "hydra/job_logging=none",
                      "hydra/hydra_logging=none")
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(ours) == 1 and named in ours[0] and "hybrid/" not in err, err
    assert not run_dir.exists()


@pytest.mark.parametrize(("override", "named"), [("seq_len=-5", "seq_len=-5"),
                                                 ("model.blocks.M.scan_backend=nope", "'nope'"),
                                                 ("model.d_model=0", "model.d_model=0")])
def test_usage_errors_of_describe_exit_2(monkeypatch, capsys, override, named):
    from hybrid import describe
    code = hydra_main(monkeypatch, describe, "model=demo", override, "hydra/job_logging=none", "hydra/hydra_logging=none")
    captured = capsys.readouterr()
    assert code == 2 and named in captured.err and ("allowed" in captured.err or "must be" in captured.err)
    assert "pattern" not in captured.out  # nothing described


def test_usage_errors_of_reproduce_and_figures_exit_2(tmp_path, capsys):
    from hybrid import figures, reproduce
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("title: [unclosed\n")
    cases = [(["no_such_recipe"], "no recipe"), ([str(bad_yaml)], str(bad_yaml)),
             (["mqar_vs_width", "profile=huge"], "'huge'"), (["mqar_vs_width", "seed=[1,"], "seed=[1,"),
             ([], "usage")]
    for args, named in cases:
        for main in (reproduce.main, figures.main):
            code = main(["--dry-run", *args]) if main is reproduce.main else main(args)
            err = capsys.readouterr().err
            assert code == 2 and named in err and "Traceback" not in err, (args, err)


def test_usage_errors_of_convert(tmp_path, capsys):
    from safetensors.torch import save_file

    from hybrid.convert.__main__ import main
    from hybrid.convert.checkpoint import save_checkpoint
    from hybrid.model import HybridLM
    (tmp_path / "empty").mkdir()
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "config.json").write_text("{bad")
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"x": torch.zeros(1)}, tmp_path / "arch" / "model.safetensors")
    model = HybridLM(vocab_size=16, d_model=8, layout={"pattern": "F"})
    save_checkpoint(model, tmp_path / "ours")
    weights = tmp_path / "ours" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    for src, code, named in [("empty", 2, "holds no checkpoint"), ("missing", 2, "missing"), ("json", 1, "JSON"),
                             ("arch", 2, "arch"), ("ours", 1, "ours")]:
        assert main([str(tmp_path / src), str(tmp_path / f"out-{src}")]) == code, src
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err and "Traceback" not in err, (src, err)
        assert not (tmp_path / f"out-{src}").exists()
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "ours"), str(tmp_path / "out"), "--dtype", "float33"])
    assert info.value.code == 2 and "float33" in capsys.readouterr().err


def test_a_failed_run_says_why_in_one_paragraph_and_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = hydra_main(monkeypatch, train, *TINY, "lit.optimizer.lr=inf", "checkpoint_every=1",
                      f"hydra.run.dir={tmp_path}", "hydra/job_logging=none", "hydra/hydra_logging=none")
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(ours) == 1 and ours[0].startswith("error: the run failed: FloatingPointError")
    assert "hybrid/train.py" not in err  # no traceback through the run
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


def test_drift_ignores_new_null_options_and_reads_the_old_task_layout(tmp_path):
    cfg = OmegaConf.to_container(config(tmp_path), resolve=True)
    old = {**cfg, "task": {"task": cfg["task"], **{k: v for k, v in cfg["data"].items() if k != "_target_"}}}
    del old["data"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    cfg["lit"]["an_option_added_since"] = None  # off by default: the old run had it off too
    assert rundir.config_changes(tmp_path, cfg) == []
    cfg["task"]["num_kv_pairs"] += 1
    assert rundir.config_changes(tmp_path, cfg) == [f"task.num_kv_pairs: {cfg['task']['num_kv_pairs'] - 1} -> "
                                                    f"{cfg['task']['num_kv_pairs']}"]
