"""`python -m hybrid.reproduce RECIPE [profile=quick|paper] [hydra/launcher=...] [overrides]`: sweep, then draw.

1. plans the recipe's multirun (hybrid.sweep: profile, extra overrides, sweep dir, point names);
2. composes one config per axis value, so that a bad override stops everything before any point runs;
3. runs `python -m hybrid.train -m ...` (printed first) with the chosen launcher: completed points are skipped,
   killed ones resume from their checkpoints, failed ones are recorded and the others go on;
4. collects the runs (hybrid.sweep.collect) and writes figures/<recipe>-<profile>.png, .pdf, .md and .csv
   (hybrid.figures), whatever the multirun's outcome.

Exit status: the multirun's when it failed as a whole (a launcher error, Ctrl-C), else 0; with --strict, 1 when
any point did not complete; 2 for a usage error (unknown recipe or profile, a recipe file that does not parse,
an override that does not compose), printed as one paragraph. --dry-run prints the plan and the command and runs
nothing; --figures-only (`python -m hybrid.figures`) only collects and draws.
"""
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from hybrid import bench_records, expectations, figures, sweep
from hybrid.checks import USAGE_EXIT
from hybrid.sweep import collect

FLAGS = ("--dry-run", "--strict", "--figures-only")


def make(p: sweep.Plan, out_dir: str | Path = "figures") -> dict:
    """Collect the plan's runs and write the figure, its table (md, csv); returns the paths and the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{p.recipe.name}-{p.sweep_dir.name}"
    long = bench_records.long_table(p.bench) if p.bench else collect.collect(p.sweep_dir, expected=p.point_names())
    table = figures.figure_table(long, p.recipe)
    outcomes = expectations.check(table, p.expect, smoke=p.smoke)
    paths = {"csv": base.with_suffix(".csv"), "md": base.with_suffix(".md")}
    table.to_csv(paths["csv"], index=False)
    if len(table):
        paths["png"], paths["pdf"] = figures.draw(table, p.recipe, base, smoke=p.smoke, chance=p.chance,
                                                  outcomes=outcomes)
    paths["md"].write_text(figures.markdown(table, p.recipe, p, long, base.with_suffix(".png").name, outcomes))
    return {"paths": paths, "table": table, "runs": long.drop_duplicates("point"), "outcomes": outcomes}


def report(made: dict, p: sweep.Plan) -> None:
    runs = made["runs"]
    bad = runs[runs.status != "completed"]
    print(f"{p.recipe.name} ({p.profile}): {len(runs) - len(bad)} of {len(runs)} points completed in {p.sweep_dir}")
    for r in bad.itertuples():
        print(f"  {r.status:<10} {r.point}: {r.reason}")
    if not len(made["table"]):
        print("  no completed run has the recipe's metric yet: no figure drawn")
    if p.smoke:
        print(f"  {figures.SMOKE}")
    for outcome in made.get("outcomes", []):
        print(f"  {outcome.line()}")
    for kind, path in made["paths"].items():
        print(f"  {kind:<4} {path}")


def cost_estimate(p: sweep.Plan, points: int) -> str:
    """points x steps / (measured steps/s of one point): the profile's `steps_per_s`, measured where it says."""
    steps = p.fixed.get("trainer.max_steps")
    rate = p.settings.get("steps_per_s")
    if steps is None or rate is None:
        return (f"cost: {points} points x {steps or '?'} steps; no measured steps_per_s in profile {p.profile}: "
                f"time one point, or add steps_per_s to the profile")
    seconds = points * int(steps) / float(rate)
    return (f"cost: {points} points x {steps} steps / {rate} steps/s = {seconds / 60:.0f} min one point at a time "
            f"(divide by the points that run at once: hydra.launcher.n_jobs, or gpu_points per GPU)")


def planned(argv: list[str]) -> sweep.Plan:
    """The plan of `RECIPE [profile=...] [overrides]`; a usage error names the file or value and what is allowed."""
    recipe, profile, extra = sweep.split_args(argv)
    try:
        return sweep.plan(recipe, extra, profile=profile)
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {recipe} is not valid YAML: {str(e).replace(chr(10), ' ')}") from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ValueError(f"an override of {' '.join(extra)!r} does not parse: {str(e).replace(chr(10), ' ')}; "
                         f"overrides are key=value (a sweep: key=a,b)") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run, strict, figures_only = (flag in argv for flag in FLAGS)
    argv = [a for a in argv if a not in FLAGS]
    try:
        p = planned(argv)
        names = p.point_names()
        if p.bench:  # a recipe of measurements: drawn from bench/results, nothing to run here
            print(f"{p.recipe.name} ({p.profile}): drawn from {p.bench} (re-measure with the command in the recipe)")
            figures_only = True
        if not figures_only:
            print(f"{p.recipe.name} ({p.profile}): {len(names)} points in {p.sweep_dir}")
            print("  " + shlex.join(p.command()))
            if dry_run:
                print("  " + cost_estimate(p, len(names)))
                return 0
            sweep.check(p)
            sweep.claim(p)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_EXIT
    except SystemExit as e:  # split_args' usage line
        print(e.code, file=sys.stderr)
        return USAGE_EXIT
    code = 0
    if not figures_only:
        code = subprocess.run(p.command(), check=False).returncode
        if code:
            print(f"the multirun exited with status {code}; drawing from the runs that exist", file=sys.stderr)
    try:
        made = make(p)
    except ValueError as e:  # the recipe's metric or plot does not fit the runs
        print(f"error: {e}", file=sys.stderr)
        return USAGE_EXIT
    report(made, p)
    runs = made["runs"]
    if code:
        return code
    return 1 if strict and (runs.status != "completed").any() else 0


if __name__ == "__main__":
    raise SystemExit(main())
