"""One multirun point in its own child process, and its share of the machine.

`run_point` (called by hybrid.train's main for each point of a `-m` run) skips a point whose result.json says
completed and runs any other in a child process, so that an exception, a NaN or a killed process is recorded
as that point's failure (result.json, with the reason) and the sweep goes on. The child is forked from a clean
forkserver process, ends when the sweep's process ends (`_exit_with`), and, when joblib runs points side by
side, takes one GPU (a lock file per GPU) or a share of the CPU cores (`pin_resources`).
"""
import importlib
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hybrid.records import read_json, record_failure

log = logging.getLogger(__name__)
BUSY_EXIT = 75  # hybrid.train's exit status when another process holds the run directory


def read_result(run_dir: Path) -> dict | None:
    """run_dir/result.json, or None when it is absent or unreadable (a run killed before it finished)."""
    return read_json(Path(run_dir) / "result.json")


def launcher_settings(hydra_cfg) -> dict:
    """What a point needs to know of its launcher: its kind and, for joblib, how many points run at once."""
    launcher = hydra_cfg.launcher
    return {"launcher": str(launcher.get("_target_", "")), "n_jobs": launcher.get("n_jobs"),
            "overrides": list(hydra_cfg.overrides.task)}


def points_at_once(n_jobs) -> int:
    """How many points joblib runs side by side for hydra.launcher.n_jobs (None or -1: one per CPU)."""
    from joblib import effective_n_jobs
    return effective_n_jobs(-1 if n_jobs is None else int(n_jobs))


def warn_if_more_points_than_cores(hydra_cfg) -> None:
    """Once per sweep (hybrid/sweep/summary.py's callback): joblib points beyond the usable cores slow each other."""
    settings = launcher_settings(hydra_cfg)
    if "joblib" not in settings["launcher"]:
        return
    from hybrid import threads
    parallel, cores = points_at_once(settings["n_jobs"]), threads.usable_cpus()
    if parallel > cores:  # one thread each is the floor: beyond the cores, the points' host work shares them
        log.warning("%d points at once on %d usable CPU cores: each point's host work (Python, data, launches) needs "
                    "about a core, so they run at a fraction of their speed; the sweep's steps/s stops growing near "
                    "hydra.launcher.n_jobs=%d", parallel, cores, cores)


def run_point(cfg: DictConfig, settings: dict, target=None) -> dict:
    """One multirun point: skip it when completed, else run `target` (default: train) in a child process.

    The child is forked from a clean server process (multiprocessing "forkserver", which imports this module
    once) rather than from this one: forking a process whose OpenMP pool has run hangs the child, and a fresh
    interpreter per point would pay the imports every time. Returns the point's result.json content.
    """
    run_dir = Path(cfg.run_dir).resolve()
    done = read_result(run_dir)
    if done is not None and done.get("status") == "completed":
        log.info("skipping %s: result.json says completed (delete the directory to run it again)", run_dir)
        return {**done, "skipped": True}
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)  # ${hydra:...} resolves here, not in the child
    settings = {**settings, "sweep_pid": os.getpid()}
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        preload = ["hybrid.sweep.isolation", "hybrid.train"]  # torch and lightning imported once
        if multiprocessing.get_start_method(allow_none=True) == "loky":
            # inside a joblib worker: the child re-applies the start method "loky", which only exists once
            # loky's context module has been imported
            preload.append("joblib.externals.loky.backend.context")
        ctx.set_forkserver_preload(preload)
    else:  # Windows: a fresh interpreter per point
        ctx = multiprocessing.get_context("spawn")
    # by its importable name: this function may be running as a copy unpickled in a joblib worker, and the child
    # finds its target by module and name
    target = target or importlib.import_module("hybrid.sweep.isolation")._point_child
    child = ctx.Process(target=target, args=(config_yaml, settings), name=f"point {run_dir.name}")
    start = time.time()
    child.start()
    try:
        child.join()
    except BaseException:  # Ctrl-C: stop the point too, then stop the sweep
        child.terminate()
        child.join(30)
        raise
    code = child.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return record_failure(run_dir, f"killed by signal {name}{hint}; re-run the sweep to resume it from "
                                       f"checkpoints/last.ckpt", since=start, exitcode=code)
    if code == BUSY_EXIT:  # another process runs this point: its files are not ours to write
        return {"status": "busy", "reason": f"{run_dir} is in use by another process", "run_dir": str(run_dir)}
    result = read_result(run_dir)
    if code != 0 or result is None or result.get("status") != "completed":
        return record_failure(run_dir, f"the point's process exited with code {code} and no result",
                              since=start, exitcode=code)
    return result


def _point_child(config_yaml: str, settings: dict) -> None:
    """Runs in the child process: ends with the sweep, logs to stderr, takes one GPU (or a CPU share) when
    joblib runs points side by side, trains."""
    if settings.get("sweep_pid"):
        _exit_with(settings["sweep_pid"])
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    cfg = OmegaConf.create(config_yaml)
    if "joblib" in settings.get("launcher", ""):
        pin_resources(cfg, settings.get("n_jobs"))
    # a point on several devices (trainer=ddp/fsdp): Lightning starts its other ranks by running this process's
    # command again; make that command this point's own single run, not the sweep, which would run every point
    run_dir = "'" + str(Path(cfg.run_dir).resolve()).replace("\\", "\\\\").replace("'", "\\'") + "'"  # quoted: = and ,
    sys.argv = [sys.argv[0], *[o for o in settings.get("overrides", []) if not o.startswith("run_dir=")],
                f"run_dir={run_dir}", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
    from hybrid.train import run_recorded
    run_recorded(cfg)


def _exit_with(pid: int) -> None:
    """SIGKILL this process when the sweep's process `pid` ends, so that no point outlives a killed sweep.

    Watching the parent is not enough: the parent is the forkserver, which lives as long as any of its
    children do. A daemon thread waits on a pidfd of the sweep's process (or polls it where there is none).
    """
    def watch():
        try:
            fd = os.pidfd_open(pid)
            select.select([fd], [], [])
        except (AttributeError, OSError):  # no pidfd here (not Linux, or an old kernel): poll
            while True:
                time.sleep(2)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="exit-with-sweep", daemon=True).start()


# A point's child process re-runs hybrid.train as __mp_main__ when the sweep was started with
# `python -m hybrid.train` (multiprocessing restores __main__ that way); the module is already imported there
# (preloaded), which runpy warns about. Harmless: the module only defines functions.
warnings.filterwarnings("ignore", message="'hybrid.train' found in sys.modules", category=RuntimeWarning)

_device_lock = None  # the open lock file of this process's GPU; the OS releases it when the process ends


def pin_resources(cfg: DictConfig, n_jobs) -> None:
    """Give a point that runs beside others (joblib) a share of the machine.

    With GPUs and trainer.devices=1 (not chosen explicitly): a slot on a GPU. Each GPU has `gpu_points` slots
    (conf/train.yaml; tiny models leave a GPU mostly idle, so several points can share it), an flock on a file
    per slot in the temp dir shared by every sweep of this user; a point takes the first free slot, filling one
    slot on every GPU before a second one on any, and waits while all are busy; trainer.devices=[that index].
    CPU threads: the usable cores divided by the points running at once (hybrid/threads.py), so that points
    never oversubscribe the CPU (for GPU points also at most 4: they only feed the GPU).
    """
    global _device_lock
    import fcntl
    import tempfile

    from hybrid import threads
    parallel = points_at_once(n_jobs)
    threads.set_parallel(parallel)
    wants_gpu = str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda") and str(cfg.trainer.devices) == "1"
    n_gpus = torch.cuda.device_count() if wants_gpu else 0
    threads.set_threads(cfg.get("threads"), on_gpu=n_gpus > 0)
    if n_gpus == 0:
        return
    per_gpu = 1 if cfg.get("gpu_points") is None else int(cfg.gpu_points)
    if per_gpu < 1:
        raise ValueError(f"gpu_points={per_gpu}; must be >= 1 (sweep points sharing one GPU)")
    if parallel > n_gpus * per_gpu:
        log.info("%d points at once but %d GPUs x gpu_points=%d slots: the others wait for a slot", parallel, n_gpus,
                 per_gpu)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    names = [visible[i].strip() if len(visible) == n_gpus else str(i) for i in range(n_gpus)]
    lock_dir = Path(tempfile.gettempdir()) / f"hybrid-gpu-locks-{os.getuid()}"
    lock_dir.mkdir(exist_ok=True)
    waited = False
    while True:
        for slot in range(per_gpu):
            for index, name in enumerate(names):
                lock = lock_dir / (f"gpu{name}.lock" if slot == 0 else f"gpu{name}.slot{slot}.lock")
                handle = open(lock, "w")  # noqa: SIM115 (held open: it is the lock)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.close()
                    continue
                _device_lock = handle
                cfg.trainer.devices = [index]
                log.info("running on GPU %d (physical %s), slot %d of %d (lock %s)", index, name, slot + 1,
                         per_gpu, handle.name)
                return
        if not waited:
            log.info("all %d GPUs x %d slots are held by other points; waiting for one", n_gpus, per_gpu)
            waited = True
        time.sleep(2)
