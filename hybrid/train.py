"""`python -m hybrid.train [model=...] [task=...] [experiment=...] [overrides]` (and `-m` for a sweep).

A thin `@hydra.main` around `train(cfg)`, which tests call directly. The run directory is derived from the
command's overrides (conf/train.yaml), so re-running a killed command finds `checkpoints/last.ckpt` and
resumes from it; a finished run re-run only re-evaluates.
"""
import importlib
import json
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from hybrid import records

log = logging.getLogger(__name__)
# CSVLogger warns that run_dir is not empty: it holds our record.json, and resumed runs keep their metrics
# history through keep_metrics_history, so the warning says nothing a user can act on.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
# the run directory's name: the overrides that make the run, or "default" when there are none
OmegaConf.register_new_resolver("run_name", lambda overrides: overrides or "default", replace=True)


def last_checkpoint(run_dir: Path) -> Path | None:
    """checkpoints/last.ckpt of run_dir when it exists; an error naming it when it cannot be read back."""
    path = run_dir / "checkpoints" / "last.ckpt"
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
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        k = 1 + sum(1 for _ in run_dir.glob("metrics.attempt*.csv"))
        metrics.replace(run_dir / f"metrics.attempt{k}.csv")


def summary_table(metrics: dict, run_dir: Path, seconds: float) -> str:
    """The lines printed at the end of a run: accuracy and loss per evaluation set, time, run directory."""
    names = sorted({k.split("acc_", 1)[1] for k in metrics if k.startswith("val/acc_")},
                   key=lambda n: (len(n), n))
    lines = [f"{'eval':<14} {'accuracy':>9} {'loss':>9}"]
    for n in names:
        lines.append(f"{n:<14} {metrics[f'val/acc_{n}']:>9.4f} {metrics.get(f'val/loss_{n}', float('nan')):>9.4f}")
    lines.append(f"time {seconds:.1f} s    run directory {run_dir}")
    return "\n".join(lines)


def train(cfg: DictConfig) -> dict:
    """Train, evaluate and record one run. Returns the result (also written to run_dir/result.json)."""
    run_dir = Path(cfg.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.task)
    model = instantiate(cfg.model)
    module = instantiate(cfg.lit, model=model, eval_names=datamodule.eval_names,
                         bytes_per_token=getattr(datamodule, "bytes_per_token", None))
    config = OmegaConf.to_container(cfg, resolve=True)
    record = records.start_record(run_dir, config, model.pattern, cfg.seed)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_cfg.get("precision") is None:  # bf16 autocast on a GPU, exact fp32 on the CPU
        trainer_cfg["precision"] = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_train_steps=cfg.checkpoint_every)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    trainer = instantiate(trainer_cfg, callbacks=[checkpoint], logger=loggers, default_root_dir=run_dir)

    resume_from = last_checkpoint(run_dir)
    if resume_from:
        log.info("resuming from %s", resume_from)
        keep_metrics_history(run_dir)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        metrics = {}
        for per_set in trainer.validate(module, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in per_set.items()})
    except FloatingPointError as e:
        last = run_dir / "checkpoints" / "last.ckpt"
        reason = f"{e}; last good checkpoint: {last if last.exists() else 'none'}"
        result = {"status": "failed", "reason": reason, "run_dir": str(run_dir)}
        records.write_json(run_dir / "result.json", result)
        records.finish_record(run_dir, record, "failed")
        raise FloatingPointError(reason) from e
    seconds = time.perf_counter() - start
    result = {"status": "completed", "run_dir": str(run_dir), "pattern": model.pattern, "seed": cfg.seed,
              "step": trainer.global_step, "seconds": seconds, "resumed_from": str(resume_from or ""),
              "metrics": metrics}
    records.write_json(run_dir / "result.json", result)
    records.finish_record(run_dir, record, "completed")
    print(summary_table(metrics, run_dir, seconds))
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    """A single run trains in this process; a failure is recorded in result.json and exits non-zero.

    In a multirun (-m) each point is isolated: a point whose result.json says completed is skipped, and any
    other runs in a child process, so that an exception, a NaN or a killed process is recorded as that
    point's failure (result.json, with the reason) and the sweep goes on. The sweep's summary
    (hybrid.callbacks.SweepSummary) lists the failures.
    """
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return run_recorded(cfg)
    return run_point(cfg, launcher_settings(HydraConfig.get()))


# ------------------------------------------------------------------------------- isolation of sweep points

def read_result(run_dir: Path) -> dict | None:
    """run_dir/result.json, or None when it is absent or unreadable (a run killed before it finished)."""
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


def record_failure(run_dir: Path, reason: str, since: float | None = None, **extra) -> dict:
    """Write result.json {status: failed, reason} and mark record.json failed.

    Keeps a result.json that train() wrote itself after `since` (its reason is the more precise one), and
    never overwrites a completed result (a finished run whose re-evaluation failed keeps its metrics).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "result.json"
    old = read_result(run_dir)
    if old is not None and (old.get("status") == "completed"
                            or (since is not None and path.stat().st_mtime >= since)):
        return old
    result = {"status": "failed", "reason": reason, "run_dir": str(run_dir), **extra}
    records.write_json(path, result)
    try:  # record.json says "running" until here; the backends and config it holds stay as they were
        record = json.loads((run_dir / "record.json").read_text())
        record.update(status="failed", end_time=records.now())
        records.write_json(run_dir / "record.json", record)
    except (OSError, ValueError):
        pass
    return result


def run_recorded(cfg: DictConfig) -> dict:
    """train(cfg); any exception is first recorded as a failed result.json in the run dir, then re-raised."""
    start = time.time()
    try:
        return train(cfg)
    except BaseException as e:
        tb = traceback.format_exc().strip().splitlines()[-20:]
        record_failure(Path(cfg.run_dir).resolve(), f"{type(e).__name__}: {e}", since=start, traceback=tb)
        raise


def launcher_settings(hydra_cfg) -> dict:
    """What a point needs to know of its launcher: its kind and, for joblib, how many points run at once."""
    launcher = hydra_cfg.launcher
    return {"launcher": str(launcher.get("_target_", "")), "n_jobs": launcher.get("n_jobs")}


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
        preload = ["hybrid.train"]
        if multiprocessing.get_start_method(allow_none=True) == "loky":
            # inside a joblib worker: the child re-applies the start method "loky", which only exists once
            # loky's context module has been imported
            preload.append("joblib.externals.loky.backend.context")
        ctx.set_forkserver_preload(preload)
    else:  # Windows: a fresh interpreter per point
        ctx = multiprocessing.get_context("spawn")
    # by its importable name: this function may be running as __main__ (python -m hybrid.train), or as a copy
    # unpickled in a joblib worker, and the child finds its target by module and name
    target = target or importlib.import_module("hybrid.train")._point_child
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


# A point's child process re-runs this module as __mp_main__ when the sweep was started with
# `python -m hybrid.train` (multiprocessing finds __main__'s functions that way); the module is already imported
# there (preloaded), which runpy warns about. Harmless: the module only defines functions.
warnings.filterwarnings("ignore", message="'hybrid.train' found in sys.modules", category=RuntimeWarning)

_device_lock = None  # the open lock file of this process's GPU; the OS releases it when the process ends


def pin_resources(cfg: DictConfig, n_jobs) -> None:
    """Give a point that runs beside others (joblib) a share of the machine.

    With GPUs and trainer.devices=1 (not chosen explicitly): the first GPU that no other point of any sweep
    of this user holds (an flock on a file per GPU in the temp dir), waiting while all are busy, and
    trainer.devices=[that index]. Without GPUs: torch threads = CPU cores // parallel points.
    """
    global _device_lock
    import fcntl
    import tempfile

    from joblib import effective_n_jobs
    parallel = effective_n_jobs(-1 if n_jobs is None else int(n_jobs))
    wants_gpu = str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda") and str(cfg.trainer.devices) == "1"
    n_gpus = torch.cuda.device_count() if wants_gpu else 0
    if n_gpus == 0:
        threads = max(1, (os.cpu_count() or 1) // parallel)
        torch.set_num_threads(threads)
        log.info("%d points in parallel: %d torch threads for this one", parallel, threads)
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    names = [visible[i].strip() if len(visible) == n_gpus else str(i) for i in range(n_gpus)]
    lock_dir = Path(tempfile.gettempdir()) / f"hybrid-gpu-locks-{os.getuid()}"
    lock_dir.mkdir(exist_ok=True)
    waited = False
    while True:
        for index, name in enumerate(names):
            handle = open(lock_dir / f"gpu{name}.lock", "w")  # noqa: SIM115 (held open: it is the lock)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _device_lock = handle
            cfg.trainer.devices = [index]
            log.info("running on GPU %d (physical %s; lock %s)", index, name, handle.name)
            return
        if not waited:
            log.info("all %d GPUs are held by other points; waiting for one", n_gpus)
            waited = True
        time.sleep(2)


if __name__ == "__main__":
    main()
