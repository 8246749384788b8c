"""Figures that cannot be mistaken for findings: expectations checked PASS / FAIL / NOT CHECKED, a smoke profile
says so, chance lines, accuracy axes 0-1, identical lines still visible, the heatmap kind."""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hybrid import expectations, figures, sweep

RECIPE = {
    "title": "toy recall",
    "fixed": {"task": "mqar"},
    "sweep": {"model.layout.pattern": ["AFAF", "MFMF"]},
    "chance": 0.03125,
    "expect": [{"text": "attention recalls", "where": {"model.layout.pattern": "AFAF"}, "metric": "accuracy",
                "min": 0.9},
               {"where": {"model.layout.pattern": "MFMF", "length": 128}, "max": 0.5}],
    "profiles": {"quick": {"fixed": {"trainer.max_steps": 5}},
                 "cpu": {"fixed": {"trainer.max_steps": 2000}, "steps_per_s": 4.0}},
    "metric": {"accuracy": r"val/acc_L(?P<length>\d+)"},
    "plot": {"kind": "line", "x": "length", "hue": "model.layout.pattern", "logx": 2, "ylabel": "accuracy"},
}


def long_table(values: dict) -> pd.DataFrame:
    """A collect()-shaped long table: {(pattern, length): accuracy}, one seed."""
    return pd.DataFrame([{"point": f"model.layout.pattern={p}", "status": "completed", "seed": 0,
                          "model.layout.pattern": p, "metric": f"val/acc_L{length}", "value": v}
                         for (p, length), v in values.items()])


@pytest.fixture
def recipe(tmp_path) -> sweep.Recipe:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    return sweep.load(path)


def test_expectations_pass_fail_and_not_checked(recipe):
    good = long_table({("AFAF", 64): 1.0, ("AFAF", 128): 0.95, ("MFMF", 64): 0.4, ("MFMF", 128): 0.1})
    bad = long_table({("AFAF", 64): 1.0, ("AFAF", 128): 0.2, ("MFMF", 64): 0.4, ("MFMF", 128): 0.9})
    cpu = sweep.plan(recipe, profile="cpu")
    assert [o.status for o in expectations.check(figures.figure_table(good, recipe), cpu.expect, cpu.smoke)] \
        == ["PASS", "PASS"]
    outcomes = expectations.check(figures.figure_table(bad, recipe), cpu.expect, cpu.smoke)
    assert [o.status for o in outcomes] == ["FAIL", "FAIL"] and "1 of 2 cells" in outcomes[0].detail
    assert outcomes[1].text == "value <= 0.5 where pattern=MFMF, length=128"
    only_mamba = long_table({("MFMF", 128): 0.1})
    assert [o.status for o in expectations.check(figures.figure_table(only_mamba, recipe), cpu.expect, False)] \
        == ["NOT CHECKED", "PASS"]
    quick = sweep.plan(recipe)
    assert quick.smoke and not cpu.smoke
    assert {o.status for o in expectations.check(figures.figure_table(good, recipe), quick.expect, True)} \
        == {"NOT CHECKED"}


def test_comparisons_and_ranges(recipe):
    table = figures.figure_table(long_table({("AFAF", 64): 1.0, ("AFAF", 128): 0.9, ("AFAF", 256): 0.2,
                                             ("MFMF", 64): 1.0, ("MFMF", 128): 0.3, ("MFMF", 256): 0.1}), recipe)
    above = {"where": {"model.layout.pattern": "AFAF", "length": {"min": 128}},
             "above": {"model.layout.pattern": "MFMF"}, "margin": 0.05}
    [outcome] = expectations.check(table, [above], smoke=False)
    assert outcome.status == "PASS" and outcome.text.startswith("value > its cell at pattern=MFMF + 0.05")
    assert outcome.detail == "means: 0.9, 0.2 vs 0.3, 0.1"  # a passed comparison shows both sides too
    [outcome] = expectations.check(table, [{**above, "margin": 0.2}], smoke=False)
    assert outcome.status == "FAIL" and "length=256: 0.2 vs 0.1" in outcome.detail
    below = {"where": {"model.layout.pattern": "MFMF", "length": {"max": 64}},
             "below": {"model.layout.pattern": "AFAF"}}
    assert expectations.check(table, [below], smoke=False)[0].status == "PASS"  # 1.0 <= 1.0
    missing = {"where": {"model.layout.pattern": "MFMF"}, "below": {"model.layout.pattern": "MFAF"}}
    assert expectations.check(table, [missing], smoke=False)[0].status == "NOT CHECKED"


def test_bad_expectations_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "expect": [{"where": {"a": 1}, "at_least": 0.9}]}))
    with pytest.raises(ValueError, match=r"expect\[0\] has unknown keys \['at_least'\]"):
        sweep.load(path)
    path.write_text(yaml.safe_dump({**RECIPE, "expect": [{"where": {"a": 1}}]}))
    with pytest.raises(ValueError, match="needs a bound"):
        sweep.load(path)


def test_smoke_figure_says_so_draws_chance_and_keeps_accuracy_axes(recipe, tmp_path, monkeypatch):
    import matplotlib.figure
    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, **kwargs):
        seen["title"] = fig._suptitle.get_text()
        ax = fig.axes[0]
        seen["ylim"] = ax.get_ylim()
        seen["lines"] = [(c.get_label(), c.lines[0].get_marker(), tuple(c.lines[0].get_xdata()))
                         for c in ax.containers]  # errorbar containers: label, data line
        seen["chance"] = [line.get_ydata()[0] for line in ax.lines if line.get_label() == "chance"]
        seen["text"] = [t.get_text() for t in fig.texts]
        return real_savefig(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    same = long_table({("AFAF", 64): 0.1, ("AFAF", 128): 0.1, ("MFMF", 64): 0.1, ("MFMF", 128): 0.1})
    table = figures.figure_table(same, recipe)
    outcomes = expectations.check(table, recipe.expect, smoke=True)
    paths = figures.draw(table, recipe, tmp_path / "toy", smoke=True, chance=recipe.chance, outcomes=outcomes)
    assert all(Path(p).exists() for p in paths)
    assert seen["title"].startswith(figures.SMOKE)
    assert seen["ylim"] == (0, 1.02)  # not zoomed onto 0.1 +- noise
    data = [line for line in seen["lines"] if line[0] in ("AFAF", "MFMF")]
    assert len({m for _, m, _ in data}) == 2, "identical lines get distinct markers"
    assert data[0][2] != data[1][2], "and a small x offset"
    assert seen["chance"] == [recipe.chance]
    assert any("NOT CHECKED" in t for t in seen["text"])  # the checks, under the figure


def test_heatmap_kind(tmp_path):
    path = tmp_path / "niah.yaml"
    path.write_text(yaml.safe_dump({
        **RECIPE, "expect": [],
        "metric": {"accuracy": r"val/acc_L(?P<length>\d+)_d(?P<depth>\d+)"},
        "plot": {"kind": "heatmap", "x": "length", "y": "depth", "col": "model.layout.pattern"}}))
    recipe = sweep.load(path)
    long = pd.DataFrame([{"point": p, "status": "completed", "seed": 0, "model.layout.pattern": p,
                          "metric": f"val/acc_L{length}_d{depth}", "value": 1.0 - depth / 100}
                         for p in ("AFAF", "MFMF") for length in (128, 256) for depth in (0, 50, 100)])
    table = figures.figure_table(long, recipe)
    assert set(table.columns) >= {"length", "depth", "mean"} and len(table) == 12
    paths = figures.draw(table, recipe, tmp_path / "niah", chance=0.03125)
    assert Path(paths[0]).stat().st_size > 0
    with pytest.raises(ValueError, match="heatmap plot needs a `y`"):
        figures.check_plot({"kind": "heatmap", "x": "length"})


SHIPPED = sorted((Path(__file__).parents[2] / "sweeps").glob("*.yaml"))
MINE = {"selective_copying", "induction_extrapolation", "mqar_vs_width", "attention_ratio", "text_attention_ratio",
        "audio_selective_vs_lti", "niah_heatmap"}


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.stem in MINE], ids=lambda p: p.stem)
def test_every_recipe_states_its_finding_and_has_a_gpu_profile(path):
    recipe = sweep.load(path)
    assert recipe.chance is not None and recipe.expect, "the published finding, as expectations"
    profiles = {"quick", "gpu", "paper"} | ({"cpu"} if path.stem in {"selective_copying", "induction_extrapolation",
                                                                      "mqar_vs_width"} else set())
    assert set(recipe.profiles) >= profiles
    for name in profiles - {"quick", "paper"}:
        p = sweep.plan(recipe, profile=name)
        assert not p.smoke and p.expect and p.settings.get("steps_per_s")
        sweep.check(p)  # every override of the profile composes
    assert sweep.plan(recipe).smoke


def test_dry_run_prints_a_cost_estimate(capsys):
    from hybrid.reproduce import main
    assert main(["sweeps/selective_copying.yaml", "profile=cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cost: 2 points x 2000 steps / 4 steps/s = 17 min" in out


def test_scan_speed_draws_the_committed_bench_results(tmp_path, capsys):
    from hybrid.reproduce import make, report
    p = sweep.plan("scan_speed", profile="gpu")
    made = make(p, out_dir=tmp_path)
    report(made, p)
    assert {"ours", "mamba_ssm"} <= set(made["table"]["provider"]) and Path(made["paths"]["png"]).exists()
    assert [o.status for o in made["outcomes"]] == ["PASS", "PASS"]
    assert "PASS" in capsys.readouterr().out
    with pytest.raises(ValueError, match="does not exist"):
        from hybrid import bench_records
        bench_records.long_table("bench/results/no_such.json")
