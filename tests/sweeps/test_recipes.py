"""Recipes in sweeps/: every one loads, both profiles plan, the quick profiles compose (one config per axis
value), extra overrides replace or extend the recipe's, and a sweep dir made with other settings is refused."""
import json
import re
from pathlib import Path

import pytest

from hybrid import sweep
from hybrid.figures import check_plot, metric_specs

ROOT = Path(__file__).parents[2]
RECIPES = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_the_four_recipes_are_shipped():
    assert {p.stem for p in RECIPES} >= {"selective_copying", "induction_extrapolation", "mqar_vs_width",
                                         "attention_ratio"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_plans_and_quick_profile_composes(path):
    recipe = sweep.load(path)
    if sweep.plan(recipe).bench:
        pytest.skip("a recipe of measurements (bench results): nothing to compose; tests/sweeps/test_figures_truth.py")
    assert set(recipe.profiles) >= {"quick", "paper"} and recipe.default_profile == "quick"
    check_plot(recipe.plot)
    assert metric_specs(recipe.metric)
    quick, paper = sweep.plan(recipe), sweep.plan(recipe, profile="paper")
    assert quick.sweep_dir == Path("multirun") / recipe.name / "quick"
    assert 1 <= len(quick.point_names()) <= 8, "quick profiles stay a few tiny runs"
    assert len(paper.point_names()) >= len(quick.point_names())
    steps = int(quick.fixed["trainer.max_steps"])
    assert steps <= 100 and int(paper.fixed["trainer.max_steps"]) > 10 * steps
    # point names carry the axes only, and each point's name is unique
    names = quick.point_names()
    assert len(set(names)) == len(names)
    keys = re.findall(r"(?:^|,)[+~]*([A-Za-z_][\w.@/-]*)=", names[0])
    assert sorted(keys) == sorted(sweep.bare(k) for k in quick.axes)
    sweep.check(quick)  # raises ValueError listing every override set that does not compose


def test_check_reports_every_bad_value_at_once():
    p = sweep.plan("attention_ratio", ["model.layout.ratios.A=0,oops", "model.no_such_key=1"])
    with pytest.raises(ValueError, match="do not compose") as info:
        sweep.check(p)
    assert "no_such_key" in str(info.value)


def test_extra_overrides_replace_axes_and_fixed_settings_and_pass_hydra_through():
    p = sweep.plan("attention_ratio", ["seed=5", "model.d_model=24", "model.layout.ratios.A=0,1.0",
                                       "hydra/launcher=local", "hydra.launcher.n_jobs=4"])
    assert "seed" not in p.axes and p.fixed["seed"] == "5"            # a single value: a fixed setting
    assert p.fixed["model.d_model"] == "24" and p.axes["model.layout.ratios.A"] == "0,1.0"
    assert p.hydra == ["hydra/launcher=local", "hydra.launcher.n_jobs=4"]
    assert p.sweep_dir.name.startswith("quick-") and p.sweep_dir != sweep.plan("attention_ratio").sweep_dir
    cmd = p.command()
    assert cmd[2:4] == ["hybrid.train", "-m"] and "hydra/launcher=local" in cmd and "seed=5" in cmd
    assert p.point_names() == ["model.layout.ratios.A=0", "model.layout.ratios.A=1.0"]
    # the same arguments in another order name the same sweep dir
    assert sweep.plan("attention_ratio", ["model.layout.ratios.A=0,1.0", "model.d_model=24", "seed=5"]).sweep_dir \
        == p.sweep_dir
    assert sweep.plan("attention_ratio", ["hydra.sweep.dir=/x/y"]).sweep_dir == Path("/x/y")


def test_unknown_profile_and_recipe_errors_name_the_choices():
    with pytest.raises(ValueError, match="allowed: \\['cpu', 'gpu', 'paper', 'quick'\\]"):
        sweep.plan("mqar_vs_width", profile="huge")
    with pytest.raises(FileNotFoundError, match="mqar_vs_width"):
        sweep.load("no_such_recipe")


def test_a_sweep_dir_made_with_other_fixed_settings_is_refused(tmp_path):
    p = sweep.plan("selective_copying", [f"hydra.sweep.dir={tmp_path}"])
    sweep.claim(p)
    assert json.loads((tmp_path / "sweep.json").read_text())["fixed"] == p.fixed
    sweep.claim(p)  # the same settings again: fine
    other = sweep.plan("selective_copying", [f"hydra.sweep.dir={tmp_path}", "model.d_model=32"])
    with pytest.raises(ValueError, match=r"other fixed settings \(differing: \['model.d_model'\]\)"):
        sweep.claim(other)


def test_resource_settings_leave_the_sweep_dir_alone():
    """threads=, gpu_points= and the like change how points run, not what they compute: a re-run with more points
    at once finds the completed ones in the same sweep dir."""
    plain = sweep.plan("mqar_vs_width", profile="cpu").sweep_dir
    assert plain.name == "cpu"
    assert sweep.plan("mqar_vs_width", ["gpu_points=20", "threads=1", "hydra/launcher=local",
                                        "hydra.launcher.n_jobs=3"], profile="cpu").sweep_dir == plain
    assert sweep.plan("mqar_vs_width", ["gpu_points=20", "seed=1"], profile="cpu").sweep_dir \
        == sweep.plan("mqar_vs_width", ["seed=1"], profile="cpu").sweep_dir != plain
