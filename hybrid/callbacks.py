"""Hydra callback of every multirun (conf/train.yaml, hydra.callbacks): checks the launcher, then summarises.

on_multirun_start  the launcher's plugin is importable, else an error naming the package to install (Hydra's
                   own message for a missing plugin does not say which)
on_multirun_end    collects every point of the sweep (hybrid.collect) into <sweep dir>/summary.csv (one row per
                   point, every config key and final metric) and summary.md (counts, a table, the failed
                   points with their reasons), and logs the failures. Points the sweep should have run but that
                   left no directory are listed as missing.
"""
import importlib
import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# the launcher plugins our presets use, by the module of their _target_
LAUNCHER_PACKAGES = {
    "hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher",
    "hydra_plugins.hydra_submitit_launcher": "hydra-submitit-launcher",
    "hydra_plugins.hydra_ray_launcher": "hydra-ray-launcher",
}
RUN_NAME = "${run_name:${hydra:job.override_dirname}}"  # conf/train.yaml's hydra.sweep.subdir


def check_launcher(hydra_cfg: DictConfig) -> None:
    """Raise ImportError naming the pip package when the launcher's plugin module cannot be imported."""
    target = str(hydra_cfg.launcher.get("_target_", ""))
    module = target.rpartition(".")[0]
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        package = next((p for prefix, p in LAUNCHER_PACKAGES.items() if module.startswith(prefix)), None)
        hint = f"pip install {package}" if package else "install the plugin that provides it"
        raise ImportError(f"hydra launcher {target!r} is not installed ({e}); {hint}, or choose another "
                          f"launcher: hydra/launcher=basic|local|local_submitit|slurm") from e


def point_names(overrides: list[str], exclude_keys: set[str], item_sep: str = ",", kv_sep: str = "=") -> list[str]:
    """The run-dir names of the points of a multirun of `overrides`, as the basic sweeper expands them and as
    Hydra's override_dirname names them (the overrides not excluded, sorted, joined), or "default"."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    parser = OverridesParser.create()
    batches = BasicSweeper.split_arguments(parser.parse_overrides(list(overrides)), None)
    names = []
    for job in (j for batch in batches for j in batch):
        lines = sorted(o.input_line for o in parser.parse_overrides(job) if o.key_or_group not in exclude_keys)
        names.append(item_sep.join(lines).replace("=", kv_sep) or "default")
    return names


def expected_points(config: DictConfig) -> list[str] | None:
    """The run-dir names (relative to the sweep dir) of every point of this multirun; None when the sweeper or
    the sub-directory scheme is not the one of conf/train.yaml."""
    hydra = config.hydra
    if "basic_sweeper" not in str(hydra.sweeper.get("_target_", "")):
        return None
    if OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir") != RUN_NAME:
        return None
    params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
    task = list(OmegaConf.to_container(hydra.overrides.task, resolve=False))
    dirname = hydra.job.config.override_dirname
    try:
        return point_names(params + task, set(dirname.exclude_keys), dirname.item_sep, dirname.kv_sep)
    except (HydraException, ValueError) as e:  # e.g. a glob sweep, which needs the config loader: use the disk
        log.debug("cannot expand the sweep (%s); the summary lists the run dirs found", e)
        return None


def write_summary(sweep_dir: str | Path, expected: list[str] | None = None):
    """summary.csv and summary.md in sweep_dir; returns the one-row-per-point table."""
    from hybrid import collect  # pandas: imported when a sweep ends, not by every run that loads this callback
    sweep_dir = Path(sweep_dir)
    table = collect.runs(sweep_dir, expected)
    if expected is not None:  # this sweep's points only, not those of earlier sweeps in the same dir
        table = table[table.point.isin(expected)].reset_index(drop=True)
    table.to_csv(sweep_dir / "summary.csv", index=False)
    (sweep_dir / "summary.md").write_text(summary_markdown(table, sweep_dir))
    return table


def summary_markdown(table, sweep_dir: Path) -> str:
    from hybrid import collect
    counts = table.status.value_counts().to_dict()
    lines = [f"# Sweep {sweep_dir}", "",
             f"{len(table)} points: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), ""]
    metrics = [c for c in table.columns if c.startswith("val/acc_")]
    shown = table[["point", "status", "step", "seconds", *metrics]]
    lines += [collect.markdown_table(shown), ""]
    bad = table[table.status != "completed"]
    if len(bad):
        lines += ["## Points that did not complete", ""]
        lines += [f"- `{r.point}` **{r.status}**: {r.reason}" for r in bad.itertuples()]
        lines += ["", ("Re-running the same command re-runs these points (completed ones are skipped); a "
                       "killed point resumes from its checkpoints/last.ckpt."), ""]
    return "\n".join(lines)


class SweepSummary(Callback):
    """hydra.callbacks.sweep_summary in conf/train.yaml."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_launcher(config.hydra)
        except ImportError as e:  # Hydra turns a callback's Exception into a warning; this must stop the sweep
            raise SystemExit(f"error: {e}") from e

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_summary(sweep_dir, expected_points(config))
        bad = table[table.status != "completed"]
        log.info("sweep %s: %d of %d points completed; summary in %s", sweep_dir, len(table) - len(bad),
                 len(table), sweep_dir / "summary.md")
        for r in bad.itertuples():
            log.warning("point %s %s: %s", r.point, r.status, r.reason)
