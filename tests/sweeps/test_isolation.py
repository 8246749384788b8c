"""One multirun point in its child process (hybrid.sweep.isolation.run_point): a killed or crashing point is recorded as
failed with its reason and returns, a completed one is skipped, the child gets one GPU or a share of the CPU."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hybrid.sweep.isolation import pin_resources, run_point

BASIC = {"launcher": "hydra._internal.core_plugins.basic_launcher.BasicLauncher", "n_jobs": None}


# targets for the child process: module-level, so the forkserver child finds them by name
def kill_myself(config_yaml, settings):
    os.kill(os.getpid(), signal.SIGKILL)


def crash_without_result(config_yaml, settings):
    raise SystemExit(3)


def write_completed(config_yaml, settings):
    cfg = OmegaConf.create(config_yaml)
    path = os.path.join(cfg.run_dir, "result.json")
    with open(path, "w") as f:
        json.dump({"status": "completed", "metrics": {"val/acc_L64": 0.5}, "child_pid": os.getpid()}, f)


def outlive_a_short_sweep(config_yaml, settings):
    """Watch a stand-in for the sweep's process that ends after a moment, then try to run on for a minute."""
    import subprocess
    import time

    from hybrid.sweep.isolation import _exit_with
    stand_in = subprocess.Popen(["sleep", "0.5"])
    _exit_with(stand_in.pid)
    time.sleep(60)


def point(tmp_path):
    return OmegaConf.create({"run_dir": str(tmp_path / "point"), "trainer": {"accelerator": "auto", "devices": 1}})


def test_a_killed_point_is_recorded_and_returns(tmp_path):
    cfg = point(tmp_path)
    (tmp_path / "point").mkdir()
    (tmp_path / "point" / "record.json").write_text(json.dumps({"status": "running", "end_time": None}))
    result = run_point(cfg, BASIC, target=kill_myself)
    assert result["status"] == "failed" and "killed by signal SIGKILL" in result["reason"]
    assert json.loads((tmp_path / "point" / "result.json").read_text()) == result
    record = json.loads((tmp_path / "point" / "record.json").read_text())
    assert record["status"] == "failed" and record["end_time"]


def test_a_point_ends_when_the_sweep_process_ends(tmp_path):
    start = time.monotonic()
    result = run_point(point(tmp_path), BASIC, target=outlive_a_short_sweep)
    assert "killed by signal SIGKILL" in result["reason"] and time.monotonic() - start < 30


def test_a_point_that_exits_without_a_result_is_recorded(tmp_path):
    result = run_point(point(tmp_path), BASIC, target=crash_without_result)
    assert result["status"] == "failed" and "exited with code 3" in result["reason"]


def test_a_completed_point_is_skipped_and_a_finished_child_is_read_back(tmp_path):
    cfg = point(tmp_path)
    (tmp_path / "point").mkdir()
    first = run_point(cfg, BASIC, target=write_completed)
    assert first["status"] == "completed" and first["child_pid"] != os.getpid()
    again = run_point(cfg, BASIC, target=kill_myself)  # would fail if it ran: it must not start a child
    assert again["skipped"] and again["child_pid"] == first["child_pid"]


def test_joblib_points_share_the_cpu_cores(monkeypatch):
    import torch
    monkeypatch.setattr("hybrid.threads.usable_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # it would cap the share (hybrid/threads.py)
    threads = torch.get_num_threads()
    try:
        cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 1}})
        pin_resources(cfg, 4)
        assert torch.get_num_threads() == 2 and cfg.trainer.devices == 1
    finally:
        torch.set_num_threads(threads)


def test_more_points_than_cores_is_said_once_per_sweep(monkeypatch, caplog):
    from hybrid.sweep.summary import SweepSummary
    monkeypatch.setattr("hybrid.threads.usable_cpus", lambda: 2)

    def sweep(n_jobs):
        launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": n_jobs}
        return OmegaConf.create({"hydra": {"launcher": launcher, "overrides": {"task": []}}})
    with caplog.at_level("WARNING", logger="hybrid.sweep.isolation"):
        SweepSummary().on_multirun_start(sweep(2))
        assert "usable CPU cores" not in caplog.text
        SweepSummary().on_multirun_start(sweep(5))
    assert "5 points at once on 2 usable CPU cores" in caplog.text and "n_jobs=2" in caplog.text


def test_joblib_points_take_the_first_free_gpu(tmp_path, monkeypatch):
    import tempfile

    import torch

    from hybrid.sweep import isolation
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # GPU points set threads too: not in this process
    first = OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1}})
    pin_resources(first, 2)
    held = isolation._device_lock  # another point's lock: this test holds it open, as that point's process would
    second = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}})
    pin_resources(second, 2)
    assert list(first.trainer.devices) == [0] and list(second.trainer.devices) == [1]
    assert Path(held.name).name == "gpu3.lock" and Path(isolation._device_lock.name).name == "gpu5.lock"
    chosen = OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 2}})
    threads = torch.get_num_threads()
    try:
        pin_resources(chosen, 2)  # devices chosen by the user: left alone, no lock taken
    finally:
        torch.set_num_threads(threads)
    assert chosen.trainer.devices == 2 and Path(isolation._device_lock.name).name == "gpu5.lock"
    held.close()


def test_several_points_share_each_gpu(tmp_path, monkeypatch):
    import tempfile

    import torch

    from hybrid.sweep import isolation
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("hybrid.threads.usable_cpus", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 0)
    held, devices = [], []
    for _ in range(4):  # 2 GPUs x gpu_points=2: one slot on every GPU first, then the second ones
        cfg = OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1}, "gpu_points": 2})
        pin_resources(cfg, 4)
        held.append(isolation._device_lock)
        devices.append(list(cfg.trainer.devices))
    assert devices == [[0], [1], [0], [1]]
    assert [Path(h.name).name for h in held] == ["gpu0.lock", "gpu1.lock", "gpu0.slot1.lock", "gpu1.slot1.lock"]
    assert threads == [4] * 4  # 16 cores / 4 points, and at most 4 for a GPU point
    bad = OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1}, "gpu_points": 0})
    with pytest.raises(ValueError, match="gpu_points=0"):
        pin_resources(bad, 4)
    for h in held:
        h.close()
