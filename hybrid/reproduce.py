"""`python -m hybrid.reproduce RECIPE [profile=quick|paper] [hydra/launcher=...] [overrides]`: sweep, then draw.

1. plans the recipe's multirun (hybrid.sweep: profile, extra overrides, sweep dir, point names);
2. composes one config per axis value, so that a bad override stops everything before any point runs;
3. runs `python -m hybrid.train -m ...` (printed first) with the chosen launcher: completed points are skipped,
   killed ones resume from their checkpoints, failed ones are recorded and the others go on;
4. draws the figure and its tables from the run records (hybrid.figures), whatever the multirun's outcome.

Exit status: the multirun's when it failed as a whole (a launcher error, Ctrl-C), else 0; with --strict, 1 when
any point did not complete. --dry-run prints the plan and the command and runs nothing.
"""
import shlex
import subprocess
import sys

from hybrid import figures, sweep


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run, strict = "--dry-run" in argv, "--strict" in argv
    argv = [a for a in argv if a not in ("--dry-run", "--strict")]
    recipe, profile, extra = sweep.split_args(argv)
    p = sweep.plan(recipe, extra, profile=profile)
    names = p.point_names()
    print(f"{p.recipe.name} ({p.profile}): {len(names)} points in {p.sweep_dir}")
    print("  " + shlex.join(p.command()))
    if dry_run:
        return 0
    try:
        sweep.check(p)
        sweep.claim(p)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    code = subprocess.run(p.command(), check=False).returncode
    if code:
        print(f"the multirun exited with status {code}; drawing from the runs that exist", file=sys.stderr)
    made = figures.make(p)
    figures.report(made, p)
    runs = made["runs"]
    if code:
        return code
    return 1 if strict and (runs.status != "completed").any() else 0


if __name__ == "__main__":
    raise SystemExit(main())
