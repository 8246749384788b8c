"""Weights & Biases for a run (conf/logger/wandb.yaml): Lightning's WandbLogger with what makes it a record.

- one W&B run per run directory: the id is kept in <run_dir>/wandb_run_id, so a resumed run (same command, same
  run dir) continues the same W&B run instead of starting a new one;
- the resolved config (the run dir's config.yaml, written before the loggers are made) is the W&B config; the
  layout pattern is logged by the LightningModule (hparams `pattern`);
- a sweep's points share a group (the recipe's sweep dir) and carry tags (recipe, profile): hybrid.sweep.recipe
  sets `logger.wandb.group` and `logger.wandb.tags` when the sweep runs with logger=wandb.
"""
import secrets
from pathlib import Path

import yaml

ID_FILE = "wandb_run_id"


def run_id(save_dir: str | Path) -> str:
    """The W&B run id of the run dir: read from <save_dir>/wandb_run_id, or drawn and written there once."""
    path = Path(save_dir) / ID_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    new = secrets.token_hex(8)
    path.write_text(new + "\n")
    return new


def wandb_logger(save_dir: str, project: str = "hybrid", offline: bool = True, group: str | None = None,
                 tags: list | None = None, name: str | None = None, **kwargs):
    """A WandbLogger resuming the run dir's W&B run, with the run's config; other kwargs go to wandb.init."""
    from lightning.pytorch.loggers import WandbLogger
    config_path = Path(save_dir) / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    return WandbLogger(save_dir=save_dir, project=project, offline=offline, id=run_id(save_dir), resume="allow",
                       group=group, tags=list(tags) if tags else None, name=name or Path(save_dir).name,
                       config=config, **kwargs)
