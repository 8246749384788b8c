"""The collector and the figures, on run records written here: long table with flattened config keys and
statuses (completed, failed, incomplete, missing), history, the figure table (mean and range over seeds, best
over learning rates, traceable rows) and the files drawn from it."""
import json
from pathlib import Path

import pandas as pd
import pytest

from hybrid import figures, reproduce, sweep
from hybrid.sweep import collect


def fake_run(sweep_dir: Path, point: str, config: dict, metrics: dict | None, status="completed", choices=None):
    """A run directory as hybrid.train writes it; metrics None: killed before result.json."""
    run = sweep_dir / point
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in point.split(",")))
    hydra = {"hydra": {"runtime": {"choices": {"model": "megatron_ratio", "hydra/launcher": "basic",
                                               "block@model.blocks.M": "mamba", **(choices or {})}}}}
    (run / ".hydra" / "hydra.yaml").write_text(json.dumps(hydra))  # JSON is YAML
    record = {"status": "running" if metrics is None else status, "config": config, "pattern": "MAMA",
              "seed": config["seed"], "git": {"commit": "abc"}}
    (run / "record.json").write_text(json.dumps(record))
    if metrics is not None:
        result = {"status": status, "seed": config["seed"], "step": 30, "seconds": 1.5}
        result.update({"metrics": metrics} if status == "completed" else {"reason": "training loss is nan"})
        (run / "result.json").write_text(json.dumps(result))
        (run / "metrics.csv").write_text("epoch,step,train/loss,val/acc_L64\n0,9,2.5,\n0,19,2.0,0.25\n")
    return run


def ratio_config(a: float, seed: int) -> dict:
    return {"seed": seed, "model": {"d_model": 16, "layout": {"ratios": {"A": a, "F": 0}}},
            "task": {"train_length": 64, "eval_lengths": [64]}}


@pytest.fixture
def ratio_sweep(tmp_path):
    """attention_ratio quick: 2 fractions x 2 seeds completed, one point failed, one killed, one never ran."""
    d = tmp_path / "sweep"
    for a, seed, acc in [(0, 0, 0.2), (0, 1, 0.4), (0.5, 0, 0.9), (0.5, 1, 0.7)]:
        fake_run(d, f"model.layout.ratios.A={a},seed={seed}", ratio_config(a, seed),
                 {"val/acc_L64": acc, "val/loss_L64": 1 - acc})
    fake_run(d, "model.layout.ratios.A=1.0,seed=0", ratio_config(1.0, 0), {}, status="failed")
    fake_run(d, "model.layout.ratios.A=1.0,seed=1", ratio_config(1.0, 1), None)
    return d


def test_collect_is_long_with_flattened_config_and_every_status(ratio_sweep):
    expected = [f"model.layout.ratios.A={a},seed={s}" for a in (0, 0.5, 1.0, 0.25) for s in (0, 1)]
    table = collect.collect(ratio_sweep, expected=expected)
    runs = table.drop_duplicates("point").set_index("point")
    assert runs.status.value_counts().to_dict() == {"completed": 4, "failed": 1, "incomplete": 1, "missing": 2}
    assert runs.loc["model.layout.ratios.A=1.0,seed=0", "reason"] == "training loss is nan"
    assert "killed" in runs.loc["model.layout.ratios.A=1.0,seed=1", "reason"]
    done = table[table.status == "completed"]
    assert len(done) == 8 and set(done.metric) == {"val/acc_L64", "val/loss_L64"}
    row = done[(done.metric == "val/acc_L64") & (done["model.layout.ratios.A"] == 0.5) & (done.seed == 1)]
    assert row.value.tolist() == [0.7] and row["model"].tolist() == ["megatron_ratio"]
    assert row["task.eval_lengths"].tolist() == ["[64]"] and "hydra/launcher" not in table.columns
    assert row["run_dir"].iloc[0].endswith("model.layout.ratios.A=0.5,seed=1")
    wide = collect.runs(ratio_sweep)
    assert len(wide) == 6 and list(wide.columns[-2:]) == ["val/acc_L64", "val/loss_L64"]


def test_history_reads_every_logged_step(ratio_sweep):
    h = collect.history(ratio_sweep)
    one = h[h.point == "model.layout.ratios.A=0,seed=0"]
    assert one[one.metric == "train/loss"].value.tolist() == [2.5, 2.0] and len(one) == 3


def test_figure_table_and_files(ratio_sweep, tmp_path):
    p = sweep.plan("attention_ratio", [f"hydra.sweep.dir={ratio_sweep}"])
    made = reproduce.make(p, out_dir=tmp_path / "figures")
    table = made["table"]
    acc = table[table.metric == "accuracy"].set_index("model.layout.ratios.A")
    assert acc.loc[0.5, "mean"] == pytest.approx(0.8) and (acc.loc[0.5, "min"], acc.loc[0.5, "max"]) == (0.7, 0.9)
    assert acc.loc[0, "n"] == 2 and acc.loc[0, "points"] == "model.layout.ratios.A=0,seed=0; model.layout.ratios.A=0,seed=1"
    assert 1.0 not in acc.index  # no completed run at fraction 1
    paths = made["paths"]
    for kind in ("png", "pdf", "md", "csv"):
        assert paths[kind].exists() and paths[kind].stat().st_size > 100, kind
    assert paths["png"].read_bytes()[:4] == b"\x89PNG" and paths["pdf"].read_bytes()[:4] == b"%PDF"
    md = paths["md"].read_text()
    assert "model.layout.ratios.A=0.5,seed=0; model.layout.ratios.A=0.5,seed=1" in md and "2 missing" in md
    assert pd.read_csv(paths["csv"]).shape[0] == len(table) == 4


def test_best_over_learning_rate_and_labels(tmp_path):
    d = tmp_path / "sweep"
    for width, lr, acc in [(16, 1e-3, 0.3), (16, 3e-3, 0.6), (32, 1e-3, 0.9), (32, 3e-3, 0.5)]:
        config = {"seed": 0, "model": {"d_model": width, "layout": {"pattern": "MFAF"}},
                  "lit": {"optimizer": {"lr": lr}}, "task": {"train_length": 64, "num_kv_pairs": 4}}
        fake_run(d, f"lit.optimizer.lr={lr},model.d_model={width}", config,
                 {"val/acc_L64": acc, "val/acc_L128": 0.0})
    recipe = sweep.load("mqar_vs_width")
    table = figures.figure_table(collect.collect(d), recipe)
    assert table["mean"].tolist() == [0.6, 0.9]  # the best lr per width, at the training length only
    assert table["best lit.optimizer.lr"].tolist() == ["0.003", "0.001"]
    shown = figures.labelled(table, recipe.plot["labels"])
    assert set(shown["model.layout.pattern"]) == {"hybrid"}
    paths = figures.draw(table, recipe, tmp_path / "fig")
    assert all(p.exists() for p in paths)


def test_metric_patterns_make_columns():
    table = pd.DataFrame({"point": ["p"] * 3, "metric": ["val/acc_L64", "val/acc_L1024", "val/loss_L64"],
                          "value": [1.0, 0.5, 0.1]})
    out = figures.select_metrics(table, r"val/acc_L(?P<length>\d+)")
    assert out.length.tolist() == [64, 1024] and set(out.metric) == {r"val/acc_L(?P<length>\d+)"}
    with pytest.raises(ValueError, match="refers to \\['no.such'\\]"):
        figures.select_metrics(table, "val/acc_L{no.such}")
