"""Real multiruns through Hydra (in this process, basic launcher): a point that fails (NaN) is recorded and the
others complete, the summary lists it, a second run skips the completed points; a failing single run exits
non-zero; a missing launcher plugin stops the sweep naming its package; submitit_local runs a point."""
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra

from hybrid import train

ROOT = Path(__file__).parents[2]
# a few steps of the smoke model, evaluated at one length
TINY = ["experiment=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2", "task.eval_lengths=[64]",
        "hydra/job_logging=none", "hydra/hydra_logging=none"]


def hydra_main(monkeypatch, *args):
    """python -m hybrid.train ARGS, in this process."""
    monkeypatch.setattr(sys, "argv", ["hybrid.train", *args])
    # as `python -m hybrid.train` does: Hydra finds ../conf beside the file, not inside the package
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    GlobalHydra.instance().clear()
    try:
        train.main()
    finally:
        GlobalHydra.instance().clear()


def test_a_failing_point_is_listed_and_the_others_complete_then_a_rerun_skips_them(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "lit.optimizer.lr=0.001,inf", f"hydra.sweep.dir={sweep_dir}"]
    hydra_main(monkeypatch, *args)
    points = {p.name: json.loads((p / "result.json").read_text()) for p in sweep_dir.iterdir() if p.is_dir()}
    bad = [n for n in points if "lr=inf" in n]
    assert len(points) == 2 and len(bad) == 1
    assert points[bad[0]]["status"] == "failed" and "nan" in points[bad[0]]["reason"]
    assert [p["status"] for n, p in points.items() if n not in bad] == ["completed"]
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 2 and sorted(summary.status) == ["completed", "failed"]
    assert "val/acc_L64" in summary.columns and summary["lit.optimizer.lr"].notna().all()
    md = (sweep_dir / "summary.md").read_text()
    assert "2 points: 1 completed, 1 failed" in md and f"`{bad[0]}` **failed**: training loss is nan" in md

    done = {n: (sweep_dir / n / "result.json").stat().st_mtime_ns for n in points if n not in bad}
    failed_at = (sweep_dir / bad[0] / "result.json").stat().st_mtime_ns
    hydra_main(monkeypatch, *args)
    assert {n: (sweep_dir / n / "result.json").stat().st_mtime_ns for n in done} == done, "completed points re-ran"
    assert (sweep_dir / bad[0] / "result.json").stat().st_mtime_ns > failed_at, "the failed point must run again"
    assert json.loads((sweep_dir / bad[0] / "result.json").read_text())["status"] == "failed"


def test_a_failing_single_run_exits_non_zero_with_its_reason_recorded(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        hydra_main(monkeypatch, *TINY, "model.layout.pattern=MXA", f"hydra.run.dir={run_dir}")
    assert exit_info.value.code == 1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "unknown block symbol 'X'" in result["reason"]


def test_a_missing_launcher_plugin_stops_the_sweep_naming_the_package(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    if __import__("importlib").util.find_spec("hydra_plugins.hydra_ray_launcher"):
        pytest.skip("hydra-ray-launcher is installed here")
    with pytest.raises(SystemExit, match="pip install hydra-ray-launcher"):
        hydra_main(monkeypatch, "-m", *TINY, "hydra/launcher=ray_cluster", f"hydra.sweep.dir={tmp_path}")
    assert not any(p.is_dir() for p in tmp_path.iterdir()), "no point may run"


@pytest.mark.skipif(os.environ.get("HYBRID_SLOW_TESTS") != "1",
                    reason="submitit_local starts a fresh interpreter per point (about 20 s of imports on a "
                           "loaded 2-core machine: 25 to 50 s for one point); run with HYBRID_SLOW_TESTS=1")
def test_submitit_local_runs_a_point(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.chdir(ROOT)  # the submitit job imports hybrid from the working directory's interpreter path
    hydra_main(monkeypatch, "-m", *TINY, "seed=3", "hydra/launcher=local_submitit", f"hydra.sweep.dir={tmp_path}")
    (point,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert "seed=3" in point.name
    result = json.loads((point / "result.json").read_text())
    assert result["status"] == "completed" and result["step"] == 2
    assert (tmp_path / ".submitit").is_dir() and "1 completed" in (tmp_path / "summary.md").read_text()
