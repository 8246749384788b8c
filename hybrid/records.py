"""What every run writes next to its metrics: record.json (how it ran) and result.json (what it reached).

`RunRecord`, a Lightning callback, owns both files over a run's life:
  start    (fit begins)        record.json {status: running, config, pattern, seed, git, versions, hardware}
  end      (`complete`)        result.json {status: completed, metrics, ...}, record.json completed + backends
  failure  (an exception in any Trainer entry point)  result.json {status: failed, reason}, record.json failed
A failure before the Trainer exists (a bad config) is written by `record_failure`. No environment variables and
nothing secret: only the config the user composed and facts about the software and machine. Every file is
written atomically (hybrid.atomic), so a killed or full-disk run never leaves half a record. Under DDP/FSDP only
rank 0 writes; record.json's `distributed` names the world size, the strategy and every rank's host and device.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch

from hybrid.atomic import write_text
from hybrid.git_state import git_state
from hybrid.ranks import launch_rank, rank_devices

PACKAGES = ("torch", "triton", "lightning", "hydra-core", "omegaconf", "numpy", "mamba-ssm", "causal-conv1d",
            "flash-attn", "transformers", "datasets")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def versions() -> dict:
    """Python and the installed versions of the packages that shape a result (None: not installed)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpus": gpus}


def reset_backends() -> None:
    """Forget the kernel backends seen so far in this process (a run starts)."""
    from hybrid.blocks.mamba2 import norm_usage
    from hybrid.kernels.attention import reset_backends_used as reset_attention
    from hybrid.kernels.selective_scan import reset_backends_used as reset_scan
    from hybrid.kernels.ssd import reset_backends_used as reset_ssd
    reset_scan()
    reset_ssd()
    reset_attention()
    norm_usage.reset()


def backends() -> dict:
    """The kernel backends that ran since the last reset_backends()."""
    from hybrid.blocks.mamba2 import norm_usage
    from hybrid.kernels.attention import backends_used as attention_backends
    from hybrid.kernels.selective_scan import backends_used as scan_backends
    from hybrid.kernels.ssd import backends_used as ssd_backends
    return {"selective_scan": scan_backends(), "ssd": ssd_backends(), "gated_rmsnorm": norm_usage.used(),
            "attention": attention_backends()}


def write_json(path: Path, data: dict) -> None:
    """Write atomically (a temporary file in the same directory, fsync, rename): never half a file."""
    write_text(Path(path), json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    """The JSON object in path, or None when it is absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def record_failure(run_dir: Path, reason: str, since: float | None = None, **extra) -> dict:
    """Write result.json {status: failed, reason} and mark record.json failed.

    Keeps a result.json written after `since` (the run's own, whose reason is the more precise one), and never
    overwrites a completed result (a finished run whose re-evaluation failed keeps its metrics).
    """
    run_dir = Path(run_dir)
    if launch_rank() != 0:  # rank 0 records the run
        return {"status": "failed", "reason": reason, "run_dir": str(run_dir), **extra}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "result.json"
    old = read_json(path)
    if old is not None and (old.get("status") == "completed"
                            or (since is not None and path.stat().st_mtime >= since)):
        return old
    result = {"status": "failed", "reason": reason, "run_dir": str(run_dir), **extra}
    write_json(path, result)
    record = read_json(run_dir / "record.json")
    if record is not None:  # "running" until here; the backends and config it holds stay as they were
        record.update(status="failed", end_time=now())
        write_json(run_dir / "record.json", record)
    return result


class RunRecord(L.Callback):
    """record.json and result.json of one run (see the module docstring).

    Args:
        run_dir: the run directory.
        config: the resolved config (a plain dict).
        pattern, seed: the model's canonical layout pattern and the run's seed.
        resumed_from: the checkpoint this run resumes from, or None.
        extra: more keys for record.json (e.g. {"resume": "force", "config_changes": [...]}).
    """

    def __init__(self, run_dir: Path, config: dict, pattern: str, seed: int, resumed_from: Path | None = None,
                 extra: dict | None = None):
        self.run_dir, self.pattern, self.seed = Path(run_dir), pattern, seed
        self.resumed_from = resumed_from
        self.record = {"status": "running", "config": config, "pattern": pattern, "seed": seed, **(extra or {}),
                       "git": None, "versions": None, "hardware": None, "distributed": None, "backends": None,
                       "start_time": None, "end_time": None}
        self.started = None
        self.writes = launch_rank() == 0  # under DDP/FSDP every rank has a RunRecord; rank 0 writes

    def start(self) -> None:
        """record.json says running; the backends are counted from here."""
        if self.started is not None:
            return
        self.started = time.perf_counter()
        reset_backends()
        self.record.update(git=git_state(), versions=versions(), hardware=hardware(), start_time=now())
        self._write("record.json", self.record)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.start()
        if self.record["distributed"] is None:  # every rank gets here once: rank_devices gathers from all
            self.record["distributed"] = {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
                                          "strategy": type(trainer.strategy).__name__,
                                          "ranks": rank_devices(trainer.strategy.root_device)}
            self._write("record.json", self.record)

    def complete(self, trainer: L.Trainer, metrics: dict) -> dict:
        """The run finished: result.json completed with its metrics, record.json completed. Returns the result."""
        seconds = time.perf_counter() - (self.started or time.perf_counter())
        result = {"status": "completed", "run_dir": str(self.run_dir), "pattern": self.pattern, "seed": self.seed,
                  "step": trainer.global_step, "seconds": seconds, "resumed_from": str(self.resumed_from or ""),
                  "metrics": metrics}
        self._write("result.json", result)
        self._finish("completed")
        return result

    def fail(self, reason: str, **extra) -> dict:
        """The run failed: result.json failed with the reason, record.json failed. Returns the result."""
        result = {"status": "failed", "reason": reason, "run_dir": str(self.run_dir), **extra}
        self._write("result.json", result)
        self._finish("failed")
        return result

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.fail(failure_reason(exception))

    def _finish(self, status: str) -> None:
        self.record.update(status=status, backends=backends(), end_time=now())
        self._write("record.json", self.record)

    def _write(self, name: str, data: dict) -> None:
        if self.writes:
            write_json(self.run_dir / name, data)


def failure_reason(exception: BaseException) -> str:
    """One line naming what stopped a run: the exception's type and message."""
    return f"{type(exception).__name__}: {exception}"
