"""A sweep's lifecycle, in one package:

  recipe     sweeps/*.yaml -> the multirun's command line, its sweep dir and point names (`plan`, `check`, `claim`)
  naming     the run-directory name (conf/train.yaml, the summary and the recipes call `run_name`)
  isolation  each point in its own child process; a GPU or a CPU share per point when points run side by side
  summary    the Hydra callback: checks the launcher, writes <sweep dir>/summary.csv and summary.md
  collect    every run of a sweep dir read into pandas (what summaries, tables and figures are made from)

`from hybrid import sweep; sweep.plan(...)` reaches the recipe functions directly.
"""
from hybrid.sweep.recipe import Plan, Recipe, bare, check, claim, load, plan, render, render_axis, split_args

__all__ = ["Plan", "Recipe", "bare", "check", "claim", "load", "plan", "render", "render_axis", "split_args"]
