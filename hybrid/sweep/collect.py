"""Read every run of a sweep directory into pandas: the table that summaries, figures and tables are made from.

A run directory is one that holds record.json, result.json or Hydra's .hydra/ (a point that started). What is
read from it:
  result.json     status (completed | failed), reason, step, seconds, the final metrics
  record.json     the resolved config (flattened to dotted columns: `model.d_model`, `task.num_kv_pairs`),
                  pattern, seed, git commit; its status "running" without a result.json means the run was killed
                  (or is still running): status "incomplete"
  .hydra/         the config-group choices (`model` = "mamba_small") and the point's overrides
  metrics*.csv    the logged history (`history()`), attempts before a resume included

`collect(sweep_dir)` is long format: one row per run and final metric (`metric`, `value`), every config key a
column; a run without metrics (failed, incomplete, missing) is one row with metric and value empty, so that
nothing silently disappears from a table. `runs(sweep_dir)` is one row per run.

    >>> table = collect("multirun/mqar_vs_width/quick")
    >>> table[table.metric == "val/acc_L64"].groupby("model")["value"].mean()
"""
import json
import math
import re
from pathlib import Path

import pandas as pd
import yaml

RUN_FILES = ("record.json", "result.json", ".hydra/overrides.yaml")
# columns of every run before its config keys
RUN_COLUMNS = ["point", "status", "reason", "run_dir", "pattern", "seed", "step", "seconds", "overrides", "commit"]


def run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories under sweep_dir (any depth: an override value with '/' nests them), sorted."""
    sweep_dir = Path(sweep_dir)
    found = set()
    for name in RUN_FILES:
        for path in sweep_dir.rglob(name):
            run = path.parent.parent if name.startswith(".hydra") else path.parent
            if ".submitit" not in run.parts:
                found.add(run)
    return sorted(found)


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1, "c": [2, 3]}} -> {"a.b": 1, "a.c": "[2, 3]"}: lists become text so a cell stays a scalar."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _hydra_choices(run_dir: Path) -> dict:
    """The config-group choices of a Hydra-launched run, e.g. {"model": "mamba_small", "task": "mqar"}."""
    hydra = _load_yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    choices = (hydra.get("hydra") or {}).get("runtime", {}).get("choices", {}) or {}
    # the user's groups only: not hydra/launcher, not the nested block@model.blocks.M defaults
    return {k: v for k, v in choices.items() if "/" not in k and "@" not in k}


def read_run(run_dir: str | Path, sweep_dir: str | Path | None = None) -> tuple[dict, dict]:
    """(run info and flattened config, final metrics) of one run directory."""
    run_dir = Path(run_dir)
    record = _load_json(run_dir / "record.json") or {}
    result = _load_json(run_dir / "result.json")
    overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    if result is not None:
        status, reason = result.get("status", "unknown"), result.get("reason", "")
    elif record:
        status = "incomplete"
        reason = ("record.json says running and there is no result.json: the run was killed, or is still "
                  "running; re-running the sweep resumes it from checkpoints/last.ckpt")
    else:
        status, reason = "incomplete", "the run started (.hydra/ exists) but wrote no record"
    result = result or {}
    config = record.get("config")
    if config is None:  # a record from before the run finished writing it: the config.yaml beside it
        config = _load_yaml(run_dir / "config.yaml") or {}
    info = {
        "point": str(run_dir.relative_to(sweep_dir)) if sweep_dir is not None else run_dir.name,
        "status": status, "reason": reason, "run_dir": str(run_dir.resolve()),
        "pattern": result.get("pattern", record.get("pattern")), "seed": result.get("seed", record.get("seed")),
        "step": result.get("step"), "seconds": result.get("seconds"), "overrides": " ".join(overrides),
        "commit": (record.get("git") or {}).get("commit"),
    }
    columns = _hydra_choices(run_dir)
    columns.update(flatten(config))  # a resolved config value wins over a group choice of the same name
    for key in RUN_COLUMNS:
        columns.pop(key, None)
    info.update(columns)
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return info, metrics


def runs(sweep_dir: str | Path, expected: list[str] | None = None) -> pd.DataFrame:
    """One row per run under sweep_dir, with its final metrics as columns. `expected` point names (relative to
    sweep_dir) that have no directory appear with status "missing"."""
    rows, names = [], set()
    for run_dir in run_dirs(sweep_dir):
        info, metrics = read_run(run_dir, sweep_dir)
        rows.append({**info, **metrics})
        names.update(metrics)
    rows.extend(_missing(sweep_dir, rows, expected))
    return pd.DataFrame(rows, columns=_ordered(rows, tail=sorted(names, key=metric_order)))


def metric_order(name: str) -> tuple:
    """Sort key: val/acc_L64 before val/acc_L128 (numbers by value), accuracy before loss."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub markdown table of frame (no index); floats formatted with floatfmt, NaN and None empty."""
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def collect(sweep_dir: str | Path, expected: list[str] | None = None) -> pd.DataFrame:
    """Long format: one row per (run, final metric); runs without metrics keep one row with metric = None."""
    rows = []
    for run_dir in run_dirs(sweep_dir):
        info, metrics = read_run(run_dir, sweep_dir)
        if not metrics:
            rows.append({**info, "metric": None, "value": math.nan})
        rows.extend({**info, "metric": name, "value": float(value)} for name, value in sorted(metrics.items()))
    rows.extend({**m, "metric": None, "value": math.nan} for m in _missing(sweep_dir, rows, expected))
    return pd.DataFrame(rows, columns=_ordered(rows, tail=["metric", "value"]))


def history(sweep_dir: str | Path) -> pd.DataFrame:
    """The logged metrics of every run, long format: point, attempt, step, metric, value (NaN cells dropped).
    Attempt k < latest is metrics.attempt<k>.csv, kept when the run resumed; the latest is metrics.csv."""
    frames = []
    for run_dir in run_dirs(sweep_dir):
        files = sorted(run_dir.glob("metrics.attempt*.csv"), key=lambda p: int(p.stem.split("attempt")[1] or 0))
        files += [run_dir / "metrics.csv"] if (run_dir / "metrics.csv").exists() else []
        for attempt, path in enumerate(files, 1):
            try:
                wide = pd.read_csv(path)
            except (OSError, ValueError, pd.errors.EmptyDataError):
                continue
            long = wide.drop(columns=["epoch"], errors="ignore").melt(id_vars=["step"], var_name="metric")
            long = long.dropna(subset=["value"])
            long.insert(0, "attempt", attempt)
            long.insert(0, "point", str(run_dir.relative_to(sweep_dir)))
            frames.append(long)
    if not frames:
        return pd.DataFrame(columns=["point", "attempt", "step", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def _missing(sweep_dir, rows: list[dict], expected: list[str] | None) -> list[dict]:
    seen = {r["point"] for r in rows}
    return [{"point": name, "status": "missing", "run_dir": str((Path(sweep_dir) / name).resolve()),
             "reason": "no run directory: the point never started (did the launcher fail?)"}
            for name in expected or [] if name not in seen]


def _ordered(rows: list[dict], tail: list[str] = ()) -> list[str]:
    """RUN_COLUMNS first, then the config keys sorted, then `tail`."""
    keys = {k for r in rows for k in r} - set(RUN_COLUMNS) - set(tail)
    return RUN_COLUMNS + sorted(keys) + list(tail)
