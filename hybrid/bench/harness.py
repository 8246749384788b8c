"""What every benchmark of hybrid.bench shares: the environment record, timing, argument checks and the long-format
JSON writer (one file per bench and device under bench/results/, rows of op, provider, mode, x, times, memory).

A run with non-default shapes never writes over the committed default result: it needs an explicit --out.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from hybrid.git_state import git_state

RESULTS = Path("bench/results")


def environment(device: str) -> dict:
    """Device name, package versions, git commit (with -dirty when tracked files have local edits), CPU count,
    torch threads and the 1-minute load: what a row needs to be compared with another."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("triton", "mamba_ssm"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except ImportError:
            pass
    if device == "cuda":
        name = torch.cuda.get_device_name()
        versions["cuda"] = torch.version.cuda
    else:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    state = git_state()  # HYBRID_GIT_COMMIT where a copied checkout's own .git is older (hybrid/git_state.py)
    commit = (state["commit"] or "unknown")[:7] + ("-dirty" if state["dirty"] else "")
    return {"device": name, "versions": versions, "commit": commit,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (sizes, lengths, counts); a usage error (exit status 2) otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; sizes and lengths must be >= 1")
    return value


def output_path(parser: argparse.ArgumentParser, args, bench: str, defaults: dict) -> Path:
    """--out when given; else bench/results/<bench>_<device>.json, but only when every option named in `defaults`
    has its default value (so a toy-size run never replaces the committed result): otherwise a usage error."""
    if args.out is not None:
        return args.out
    changed = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in defaults.items() if getattr(args, k) != v]
    if changed:
        parser.error(f"non-default shapes ({', '.join(changed)}) need an explicit --out FILE: "
                     f"bench/results/{bench}_{args.device}.json holds the default-shape result")
    return RESULTS / f"{bench}_{args.device}.json"


def write_rows(path: Path, bench: str, env: dict, rows: list[dict], quiet: bool = False, **extra) -> None:
    """Long-format JSON: {"bench", the environment, "time", extra keys, "rows": [{..., device, versions, commit}]}."""
    rows = [dict(r, device=env["device"], versions=env["versions"], commit=env["commit"]) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": bench, **env, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra,
                                "rows": rows}, indent=1) + "\n")
    if not quiet:
        print(f"wrote {path} ({len(rows)} rows)")


def cpu_timing(step, budget_s=0.2, min_reps=3, max_reps=30):
    """Median and 20/80% quantiles (ms) of perf_counter timings, repeating until the budget is spent."""
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5, method="inclusive")
    return statistics.median(times), q[0], q[3]


def measure(fn, inputs: dict, mode: str, device: str) -> dict:
    """Time `fn(inputs)` (mode "fwd") or its forward + backward ("fwd+bwd", a random output gradient). Returns
    median/p20/p80 ms (CUDA: triton's do_bench; CPU: cpu_timing), first_call_ms (compilation included) and
    peak_mem_bytes (CUDA: the peak of one call beyond what was allocated before it; CPU: None)."""
    leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor) and t.requires_grad]
    grad = {}

    def step():
        y = fn(inputs)
        if mode == "fwd+bwd":
            if "g" not in grad:
                grad["g"] = torch.randn_like(y)
            y.backward(grad["g"])
            for t in leaves:
                t.grad = None

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    step()
    sync()
    first = (time.perf_counter() - t0) * 1e3
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else None
    if device == "cuda":
        import triton.testing
        med, p20, p80 = triton.testing.do_bench(step, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
    else:
        med, p20, p80 = cpu_timing(step)
    return dict(median_ms=med, p20_ms=p20, p80_ms=p80, first_call_ms=first, peak_mem_bytes=peak)


def safe_measure(fn, inputs: dict, mode: str, device: str) -> dict:
    """measure(), with a provider that cannot run (out of memory, a runtime error) recorded as an error row."""
    try:
        return measure(fn, inputs, mode, device)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if device == "cuda":
            torch.cuda.empty_cache()
        for t in inputs.values():
            if isinstance(t, torch.Tensor):
                t.grad = None
        kind = "out of memory" if isinstance(err, torch.OutOfMemoryError) else type(err).__name__
        print(f"  failed: {kind}: {str(err).splitlines()[0][:300]}", file=sys.stderr)
        return dict(median_ms=None, p20_ms=None, p80_ms=None, first_call_ms=None, peak_mem_bytes=None,
                    error=f"{kind}: {str(err).splitlines()[0][:300]}")
