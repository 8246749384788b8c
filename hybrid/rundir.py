"""A run directory between attempts: one process at a time, the checkpoint to resume from, the history of earlier
attempts, and the config the weights were trained with.

  lock(run_dir)            an exclusive lock (flock on run_dir/.lock) held while a run uses the directory; the
                           OS drops it when the process ends however it ends, so a lock left by a dead process
                           is never in the way. A second process gets RunDirBusy naming the holder.
  last_checkpoint(run_dir) checkpoints/last.ckpt when it exists and reads back whole, else an error naming it
  keep_metrics_history     metrics.csv of an earlier attempt moved to metrics.attempt<k>.csv
  remove_hydra_leftovers   a refused command (usage error) leaves no run directory behind
  config_changes           what differs between the config the checkpoint was trained with (config.yaml) and
                           this attempt's; keys that only change evaluation or bookkeeping (EVALUATION_ONLY) may
                           change, any other change is refused unless the user passes resume=force.
"""
import contextlib
import fcntl
import json
import os
import shutil
import socket
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import yaml

from hybrid.checks import UsageError

# How a run runs, not what it computes: also left out of a recipe's sweep-dir hash (hybrid/sweep/recipe.py)
RUN_SETTINGS = ("resume", "trainer.accelerator", "trainer.devices", "trainer.enable_progress_bar", "threads",
                "gpu_points", "progress_bar_every", "lit.progress_every_s")
# Keys a resumed run may change freely: they decide what is evaluated, logged or where it runs, never the weights
# or the data stream the weights see. Anything else (model, optimizer, schedule, max_steps, precision, data...)
# changes what the checkpoint's weights mean, and is refused unless resume=force.
EVALUATION_ONLY = (
    *RUN_SETTINGS, "run_dir", "checkpoint_every", "logger", "logger.*",
    "trainer.enable_model_summary", "trainer.log_every_n_steps", "trainer.val_check_interval",
    "trainer.limit_val_batches", "trainer.num_sanity_val_steps", "trainer.limit_test_batches",
    "lit.finite_check_every",
    "task.eval_lengths", "task.eval_depths", "task.eval_num_kv_pairs", "task.eval_chunk", "data.eval_batches",
    "data.eval_batch_size",
)
DATA_KEYS = ("batch_size", "eval_batch_size", "eval_batches", "seed")  # at `task` before `data` existed


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory."""


class ConfigDrift(UsageError):
    """The config differs from the one the checkpoint was trained with."""


def lock(run_dir: Path):
    """Take run_dir's lock (an open file: keep it, close it to release). Raises RunDirBusy naming the holder.
    Under DDP/FSDP only rank 0 locks: the other ranks are the same run (a no-op context for them)."""
    from lightning.pytorch.utilities import rank_zero_only
    if rank_zero_only.rank != 0:
        return contextlib.nullcontext()
    path = Path(run_dir) / ".lock"
    handle = open(path, "a+")  # noqa: SIM115 (held open: it is the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirBusy(f"run directory {run_dir} is in use by another process ({holder}); wait for it to end, "
                         f"or give this run another directory (run_dir=...)") from None
    handle.seek(0)
    handle.truncate()  # whatever a process that ended left here is stale: the OS released its lock
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def last_checkpoint(run_dir: Path) -> Path | None:
    """checkpoints/last.ckpt of run_dir when it exists; an error naming it when it cannot be read back."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not path.exists():
        return None
    try:  # torch.save writes a zip archive whose members carry CRCs: check them without unpickling anything
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as e:
        bad = str(e)
    if bad is not None:
        raise RuntimeError(f"checkpoint {path} is corrupted ({bad}); refusing to restart from scratch silently. "
                           f"Delete it to start this run over, or restore it from a copy.")
    return path


def keep_metrics_history(run_dir: Path) -> None:
    """Move metrics.csv of an earlier attempt to metrics.attempt<k>.csv: Lightning's CSVLogger starts a new
    metrics.csv when a run resumes, and the steps logged before the kill are part of the run's history."""
    metrics = Path(run_dir) / "metrics.csv"
    if metrics.exists():
        k = 1 + sum(1 for _ in Path(run_dir).glob("metrics.attempt*.csv"))
        metrics.replace(Path(run_dir) / f"metrics.attempt{k}.csv")


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty mapping stays a leaf."""
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def migrated(config: dict) -> dict:
    """A config.yaml written before the task/data split (`task.task.*`, `task.batch_size`) in today's layout."""
    task = config.get("task")
    if isinstance(task, dict) and isinstance(task.get("task"), dict):
        data = {k: task[k] for k in DATA_KEYS if k in task}
        config = {**config, "task": dict(task["task"]), "data": {"_target_": "hybrid.tasks.datamodule.data_module",
                                                                 **data}}
    return config


def config_changes(run_dir: Path, config: dict) -> list[str]:
    """The training-relevant differences between run_dir/config.yaml (what the checkpoint was trained with)
    and `config` (resolved), one line each: "key: old -> new". Empty when there is no earlier config. A key
    absent on one side and null on the other is no change (a newer option whose default is off)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return []
    old = flatten(migrated(yaml.safe_load(path.read_text()) or {}))
    new = flatten(json.loads(json.dumps(config, default=str)))
    lines = []
    for key in sorted(set(old) | set(new)):
        if any(key == p or fnmatch(key, p) for p in EVALUATION_ONLY):
            continue
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    return lines


def check_resume(run_dir: Path, config: dict, force: bool) -> list[str]:
    """The config changes of a resumed run; ConfigDrift listing them unless force."""
    changes = config_changes(run_dir, config)
    if changes and not force:
        listing = "; ".join(changes)
        raise ConfigDrift(f"run directory {run_dir} holds a checkpoint trained with another config ({listing}). "
                          f"Resuming would record weights under a config that did not make them. Use another "
                          f"run directory, or pass resume=force to resume anyway (recorded in record.json).")
    return changes


def remove_hydra_leftovers(run_dir: Path) -> None:
    """After a usage error: remove what Hydra wrote before the run was checked (.hydra/, train.log), when the
    directory holds nothing else, so a refused command leaves no run directory behind."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir)
