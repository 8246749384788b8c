"""What every run writes next to its metrics: record.json (how it ran) and result.json (what it reached).

record.json: the resolved config, the canonical layout pattern, seed, git commit and dirty flag, package
versions, the scan and attention backends that ran, CPU/GPU names, start and end times. No environment
variables and nothing secret: only the config the user composed and facts about the software and machine.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

PACKAGES = ("torch", "triton", "lightning", "hydra-core", "omegaconf", "numpy", "mamba-ssm", "causal-conv1d",
            "flash-attn", "transformers", "datasets")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def git_state(repo: Path | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the repository holding this package."""
    repo = repo or Path(__file__).resolve().parents[1]
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        return {"commit": head.stdout.strip(), "dirty": bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


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


def backends() -> dict:
    """The kernel backends that ran in this process."""
    from hybrid.kernels.attention import backends_used as attention_backends
    from hybrid.kernels.selective_scan.interface import backends_used as scan_backends
    return {"selective_scan": scan_backends(), "attention": attention_backends()}


def write_json(path: Path, data: dict) -> None:
    """Write atomically (a temporary file, then rename), so a killed run never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def start_record(run_dir: Path, config: dict, pattern: str, seed: int) -> dict:
    record = {"status": "running", "config": config, "pattern": pattern, "seed": seed, "git": git_state(),
              "versions": versions(), "hardware": hardware(), "backends": None, "start_time": now(),
              "end_time": None}
    write_json(run_dir / "record.json", record)
    return record


def finish_record(run_dir: Path, record: dict, status: str) -> None:
    record.update(status=status, backends=backends(), end_time=now())
    write_json(run_dir / "record.json", record)
