"""`python -m hybrid.train [model=...] [task=...] [experiment=...] [overrides]` (and `-m` for a sweep).

A thin `@hydra.main` around `train(cfg)`, which tests call directly. The run directory is derived from the
command's overrides (conf/train.yaml), so re-running a killed command finds `checkpoints/last.ckpt` and
resumes from it; a finished run re-run only re-evaluates.
"""
import logging
import time
import zipfile
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from hybrid import records

log = logging.getLogger(__name__)
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
    module = instantiate(cfg.lit, model=model, eval_names=datamodule.eval_names)
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
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
