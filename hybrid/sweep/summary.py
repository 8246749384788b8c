"""Hydra callback of every multirun (conf/train.yaml, hydra.callbacks): checks the launcher, then summarises.

on_multirun_start  the launcher's plugin is importable, else an error naming the package to install (Hydra's
                   own message for a missing plugin does not say which); a warning when joblib would run more
                   points at once than there are usable CPU cores
on_multirun_end    collects every point of the sweep (hybrid.sweep.collect) into <sweep dir>/summary.csv (one row per
                   point, every config key and final metric) and summary.md (counts, a table, the failed
                   points with their reasons), and logs the failures. Points the sweep should have run but that
                   left no directory are listed as missing. A later sweep of other overrides in the same
                   directory does not erase this one's: each is also kept as summary-<sweep name>.{csv,md}.
"""
import hashlib
import importlib
import logging
from pathlib import Path

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hybrid.sweep.naming import point_names, sweep_name

log = logging.getLogger(__name__)

# the launcher plugins our presets use, by the module of their _target_
LAUNCHER_PACKAGES = {
    "hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher",
    "hydra_plugins.hydra_submitit_launcher": "hydra-submitit-launcher",
    "hydra_plugins.hydra_ray_launcher": "hydra-ray-launcher",
}
RUN_NAME = "${run_name:${hydra:job.override_dirname}}"  # conf/train.yaml's hydra.sweep.subdir (naming.run_name)


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


def expected_points(config: DictConfig) -> list[str] | None:
    """The run-dir names (relative to the sweep dir) of every point of this multirun; None when the sweeper or
    the sub-directory scheme is not the one of conf/train.yaml."""
    hydra = config.hydra
    if "basic_sweeper" not in str(hydra.sweeper.get("_target_", "")):
        return None
    if OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir") != RUN_NAME:
        return None
    dirname = hydra.job.config.override_dirname
    try:
        return point_names(sweep_overrides(config), set(dirname.exclude_keys), dirname.item_sep, dirname.kv_sep)
    except (HydraException, ValueError) as e:  # e.g. a glob sweep, which needs the config loader: use the disk
        log.debug("cannot expand the sweep (%s); the summary lists the run dirs found", e)
        return None


def sweep_overrides(config: DictConfig) -> list[str]:
    """The overrides of this multirun: the sweeper's params, then the command line's."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    return params + list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))


def summary_key(config: DictConfig) -> str:
    """This sweep's name among the summaries of its directory: its overrides (hashed when too long for a file)."""
    name = sweep_name(sweep_overrides(config), set(config.hydra.job.config.override_dirname.exclude_keys))
    if len(name) > 100 or "/" in name:
        name = name[:60].replace("/", "_") + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def write_summary(sweep_dir: str | Path, expected: list[str] | None = None, key: str | None = None):
    """summary.csv and summary.md in sweep_dir (and, with `key`, a copy summary-<key>.* that later sweeps of
    other overrides leave alone); returns the one-row-per-point table."""
    from hybrid.atomic import write_text
    from hybrid.sweep import collect  # pandas: imported when a sweep ends, not by every run loading this callback
    sweep_dir = Path(sweep_dir)
    table = collect.runs(sweep_dir, expected)
    if expected is not None:  # this sweep's points only, not those of earlier sweeps in the same dir
        table = table[table.point.isin(expected)].reset_index(drop=True)
    places = [(sweep_dir / "summary.csv", sweep_dir / "summary.md")]
    if key is not None:
        places.append((sweep_dir / f"summary-{key}.csv", sweep_dir / f"summary-{key}.md"))
    for csv, md in places:
        write_text(csv, table.to_csv(index=False))
        write_text(md, summary_markdown(table, sweep_dir))
    return table


def summary_markdown(table, sweep_dir: Path) -> str:
    from hybrid.sweep import collect
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
        from hybrid.sweep.isolation import warn_if_more_points_than_cores  # torch: imported when a sweep starts
        warn_if_more_points_than_cores(config.hydra)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_summary(sweep_dir, expected_points(config), summary_key(config))
        bad = table[table.status != "completed"]
        log.info("sweep %s: %d of %d points completed; summary in %s", sweep_dir, len(table) - len(bad),
                 len(table), sweep_dir / "summary.md")
        for r in bad.itertuples():
            log.warning("point %s %s: %s", r.point, r.status, r.reason)
