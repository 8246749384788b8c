"""A progress line every so often when the progress bar is off (every recipe turns it off): a sweep point or a
run in a log file says where it is instead of printing nothing until it ends."""
import logging
import time

import lightning as L

log = logging.getLogger(__name__)


def _value(metrics: dict, name: str) -> str:
    value = metrics.get(name)
    return "-" if value is None else f"{float(value):.4g}"


class ProgressLog(L.Callback):
    """Logs `step k/max  loss  acc  steps/s  eta` at most every `every_s` seconds of training, and the first
    evaluation metric after each validation. Reads the logged metrics only then (one host sync per line)."""

    def __init__(self, every_s: float = 30.0):
        if every_s <= 0:
            raise ValueError(f"ProgressLog every_s={every_s}; must be > 0 seconds")
        self.every_s = every_s
        self._last_time, self._last_step = None, 0

    def on_train_start(self, trainer, pl_module):
        self._last_time, self._last_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.monotonic()
        if self._last_time is None or now - self._last_time < self.every_s:
            return
        step, total = trainer.global_step, trainer.max_steps
        rate = (step - self._last_step) / (now - self._last_time)
        eta = f"{(total - step) / rate / 60:.1f} min" if rate > 0 and total and total > 0 else "?"
        metrics = trainer.callback_metrics
        log.info("step %d/%s  loss %s  acc %s  %.2f steps/s  eta %s", step, total if total > 0 else "?",
                 _value(metrics, "train/loss"), _value(metrics, "train/acc"), rate, eta)
        self._last_time, self._last_step = now, step

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        shown = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("val/acc_", "val/bpb_"))}
        if shown:  # val/acc_L64 before val/acc_L128
            names = sorted(shown, key=lambda k: (k.split("_")[0], len(k), k))[:8]
            log.info("step %d  %s", trainer.global_step, "  ".join(f"{k} {_value(shown, k)}" for k in names))
