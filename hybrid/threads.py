"""CPU threads per process: never more than the cores this process may use, shared among the points that run at
once. PyTorch's default is the machine's core count, which ignores CPU affinity (taskset) and container quotas
(cgroup cpu.max): in a container allowed 2 of 64 cores it starts 32 threads whose spinning OpenMP pools then
fight, and two runs side by side slow each other several times over.

`threads=null` (conf/train.yaml) picks `default_threads`: the usable cores divided by the points that run at once,
and at most 4 when a GPU does the work (the CPU only feeds it: data generation and kernel launches); an
OMP_NUM_THREADS in the environment lowers it further (the user's word).
"""
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)
GPU_THREADS = 4  # a GPU run needs few: the data stream and the launch loop
_parallel = 1    # processes of this sweep running at once on this machine (set by hybrid.sweep.isolation)


def set_parallel(n: int) -> None:
    """Tell this process how many points run at once beside it (their CPU share divides by it)."""
    global _parallel
    _parallel = max(1, int(n))


def uses_gpu(accelerator) -> bool:
    """Whether the trainer's accelerator setting puts the work on a GPU here."""
    import torch
    accelerator = str(accelerator)
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 quota (cpu.max) when set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads(on_gpu: bool, parallel: int | None = None) -> int:
    """Threads for one of `parallel` processes running at once on this machine (default: set_parallel's)."""
    share = max(1, usable_cpus() // max(1, parallel or _parallel))
    return min(share, GPU_THREADS) if on_gpu else share


def set_threads(threads: int | None, on_gpu: bool, parallel: int | None = None) -> int:
    """torch.set_num_threads(threads, or the default); returns the number set. A bad value is a clear error."""
    import torch
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads={threads}; must be >= 1, or null for the default "
                         f"({default_threads(on_gpu, parallel)} here)")
    if threads is not None:
        n = int(threads)
    else:
        n = default_threads(on_gpu, parallel)
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():
            n = max(1, min(n, int(os.environ["OMP_NUM_THREADS"])))
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
        log.info("%d torch threads (%d usable cores, %d points at once%s)", n, usable_cpus(), parallel or _parallel,
                 ", GPU run" if on_gpu else "")
    return n
