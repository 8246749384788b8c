"""`python -m hybrid.train [model=...] [task=...] [experiment=...] [overrides]` (and `-m` for a sweep).

A thin `@hydra.main` around `train(cfg)`, which tests call directly. The run directory is named from the
command's overrides (hybrid.sweep.naming), so re-running a killed command finds `checkpoints/last.ckpt` and
resumes from it; a finished run re-run only re-evaluates. Sweep points run isolated (hybrid.sweep.isolation).

Exit status: 0 done; 1 the run failed (result.json says why); 2 a usage error (nothing written); 75 the run
directory is in use by another process; 130 / 143 stopped by Ctrl-C / SIGTERM (resume by re-running).
"""
import contextlib
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from hybrid import ranks, rundir, threads
from hybrid.atomic import AtomicCheckpointIO, write_text
from hybrid.checks import UsageError, check_run, exit_on_usage_error
from hybrid.records import RunRecord, record_failure
from hybrid.signals import Stopped, stop_on_signals
from hybrid.sweep import isolation, naming  # noqa: F401 (naming registers ${run_name:} for conf/train.yaml)

log = logging.getLogger(__name__)
# CSVLogger warns that run_dir is not empty: it holds our record.json, and resumed runs keep their metrics
# history through keep_metrics_history, so the warning says nothing a user can act on.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
BUSY_EXIT = 75  # EX_TEMPFAIL: try again when the other process is done


def summary_table(metrics: dict, run_dir: Path, seconds: float) -> str:
    """The lines printed at the end of a run: per evaluation set the task's own metric (bits per byte for byte-level
    data such as audio and text, else accuracy) and the loss, time, run directory."""
    names = sorted({k.split("_", 1)[1] for k in metrics if k.startswith(("val/acc_", "val/bpb_"))},
                   key=lambda n: (len(n), n))
    bpb = any(k.startswith("val/bpb_") for k in metrics)
    first = "bits/byte" if bpb else "accuracy"
    lines = [f"{'eval':<14} {first:>9} {'loss':>9}"]
    for n in names:
        value = metrics.get(f"val/bpb_{n}" if bpb else f"val/acc_{n}", float("nan"))
        lines.append(f"{n:<14} {value:>9.4f} {metrics.get(f'val/loss_{n}', float('nan')):>9.4f}")
    lines.append(f"time {seconds:.1f} s    run directory {run_dir}")
    return "\n".join(lines)


def progress_bar(cfg: DictConfig) -> list:
    """The progress bar, refreshed every `progress_bar_every` steps: each refresh reads the logged metrics (a host
    sync), which Lightning's default of every step pays on every step. [] when the bar is off."""
    if not cfg.trainer.get("enable_progress_bar", True):
        return []
    every = int(cfg.get("progress_bar_every", 1))
    if every < 1:
        raise ValueError(f"progress_bar_every={every}; must be >= 1 (steps between progress-bar refreshes)")
    return [TQDMProgressBar(refresh_rate=every)]


def train(cfg: DictConfig) -> dict:
    """Train, evaluate and record one run. Returns the result (also written to run_dir/result.json)."""
    check_run(cfg)  # usage errors before anything is built or written
    threads.set_threads(cfg.get("threads"), on_gpu=threads.uses_gpu(cfg.trainer.accelerator))
    run_dir = Path(cfg.run_dir).resolve()
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _partial_=True)(task=instantiate(cfg.task))
    model = instantiate(cfg.model)
    module = instantiate(cfg.lit, model=model, eval_names=datamodule.eval_names,
                         bytes_per_token=getattr(datamodule, "bytes_per_token", None))
    config = OmegaConf.to_container(cfg, resolve=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank_zero = ranks.launch_rank() == 0  # DDP/FSDP: the other ranks run this too, and leave the files to rank 0
    with rundir.lock(run_dir) if rank_zero else contextlib.nullcontext():
        resume_from = rundir.last_checkpoint(run_dir)
        changes = rundir.check_resume(run_dir, config, force=cfg.get("resume") == "force") if resume_from else []
        extra = {"resume": "force", "config_changes": changes} if changes else {}
        record = RunRecord(run_dir, config, model.pattern, cfg.seed, resume_from, extra)
        if rank_zero:
            write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        if trainer_cfg.get("precision") is None:  # bf16 autocast on a GPU, exact fp32 on the CPU
            trainer_cfg["precision"] = "bf16-mixed" if torch.cuda.is_available() else "32-true"
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
                                     every_n_train_steps=cfg.checkpoint_every)
        loggers = [instantiate(c) for c in cfg.logger.values()]
        trainer = instantiate(trainer_cfg, callbacks=[checkpoint, record, *progress_bar(cfg)], logger=loggers,
                              default_root_dir=run_dir, plugins=[AtomicCheckpointIO()])
        if resume_from:
            ranks.check_same_world(run_dir, trainer.world_size, force=cfg.get("resume") == "force")
            log.info("resuming from %s%s", resume_from, f" with changes {changes} (resume=force)" if changes else "")
            if rank_zero:
                rundir.keep_metrics_history(run_dir)
        record.start()
        try:
            with stop_on_signals():
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
                metrics = {}
                for per_set in trainer.validate(module, datamodule=datamodule, verbose=False):
                    metrics.update({k: float(v) for k, v in per_set.items()})
        except Stopped as e:
            record.fail(f"{e}; re-run the same command to resume from checkpoints/last.ckpt", signal=e.name)
            raise SystemExit(e.exit_code) from None
        except FloatingPointError as e:
            last = run_dir / "checkpoints" / "last.ckpt"  # only finite weights are ever written there
            reason = f"{e}; last good checkpoint: {last if last.exists() else 'none'}"
            record.fail(reason)
            raise FloatingPointError(reason) from e
        result = record.complete(trainer, metrics)
    if rank_zero:
        print(summary_table(metrics, run_dir, result["seconds"]))
    return result


def run_recorded(cfg: DictConfig) -> dict:
    """train(cfg); any other failure is first recorded as a failed result.json in the run dir, then re-raised.
    A busy run directory is not this run's to record in: it says so and exits with BUSY_EXIT."""
    start = time.time()
    try:
        return train(cfg)
    except rundir.RunDirBusy as e:
        log.error("%s", e)
        raise SystemExit(BUSY_EXIT) from None
    except (UsageError, SystemExit):
        raise  # nothing of this run was written (usage), or the run recorded why it stopped (a signal)
    except BaseException as e:
        tb = traceback.format_exc().strip().splitlines()[-20:]
        record_failure(Path(cfg.run_dir).resolve(), f"{type(e).__name__}: {e}", since=start, traceback=tb)
        raise


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_usage_error
def main(cfg: DictConfig) -> dict:
    """A single run trains in this process; a multirun (-m) runs each point in a child process
    (hybrid.sweep.isolation) and summarises the sweep (hybrid.sweep.summary)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        run_dir = Path(cfg.run_dir).resolve()
        try:
            return run_recorded(cfg)
        except UsageError:
            rundir.remove_hydra_leftovers(run_dir)
            raise
        except Exception as e:  # recorded in result.json; HYDRA_FULL_ERROR=1 shows the traceback here
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: the run failed: {type(e).__name__}: {e} (recorded in {run_dir / 'result.json'}; "
                  f"HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
            raise SystemExit(1) from None
    return isolation.run_point(cfg, isolation.launcher_settings(HydraConfig.get()))


if __name__ == "__main__":
    main()
