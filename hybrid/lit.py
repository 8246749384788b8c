"""The LightningModule: next-token loss on the task's answer positions, the MoE balancing loss, AdamW with
warmup + cosine, accuracy per evaluation length. Lightning does the loop, precision, clipping, checkpoints.

No host sync per training step (tiny models on a GPU are launch-bound, and a sync stops the CPU from running
ahead): a non-finite loss is recorded on the device and checked every `finite_check_every` steps and before
every checkpoint; evaluation sums stay on the device until the end of the evaluation."""
import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType

from hybrid import ranks
from hybrid.chunked_eval import chunked_stats, eval_chunk_of
from hybrid.fsdp import plain_name
from hybrid.model import HybridLM
from hybrid.progress import ProgressLog

IGNORE = -100  # targets outside the answer positions
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 100,
                  min_lr_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio` * lr at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def answer_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, correct count and answer count over the answer positions.

    logits [batch, L, vocab] and targets [batch, L] (IGNORE outside answers) -> three scalars.
    """
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
    loss_sum = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction="sum")
    mask = flat_targets != IGNORE
    correct = ((flat_logits.argmax(-1) == flat_targets) & mask).sum()  # no boolean indexing: no host sync
    return loss_sum, correct, mask.sum()


class HybridLitModule(L.LightningModule):
    """Trains a HybridLM. Metrics: train/loss, train/acc, train/aux_loss, train/expert_share_max, and per
    evaluation set (its name from the data module, e.g. "L256"): val/loss_<name>, val/acc_<name>, and for byte-level
    data (bytes_per_token set) val/bpb_<name>.

    finite_check_every: steps between checks of the device-side non-finite flag (also checked before every
        checkpoint and at the end, so no checkpoint is written after a NaN went unnoticed).
    compile: None or False (off), True or a torch.compile mode ("default", "reduce-overhead": CUDA graphs,
        "max-autotune-no-cudagraphs"): compiles the model's forward (and so its backward) in place, the state
        dict unchanged. Pays for small models on a GPU, where the step is launch-bound; off by default.
    progress_every_s: with the progress bar off, a progress line at most this often (hybrid/progress.py).
    """

    def __init__(self, model: HybridLM, optimizer: Callable, scheduler: Callable | None = None,
                 aux_loss_weight: float = 0.01, eval_names: Sequence[str] = ("L",),
                 bytes_per_token: float | None = None, finite_check_every: int = 100,
                 compile: bool | str | None = None, progress_every_s: float = 30.0):
        super().__init__()
        if finite_check_every < 1:
            raise ValueError(f"finite_check_every={finite_check_every}; must be >= 1 step")
        if compile not in (None, False, True) and compile not in COMPILE_MODES:
            raise ValueError(f"compile={compile!r}; allowed: null or false (off), true, {', '.join(COMPILE_MODES)}")
        self.bytes_per_token = bytes_per_token  # set for byte-level data (audio, text): adds val/bpb_<name>
        self.model, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler
        self.aux_loss_weight, self.eval_names = aux_loss_weight, list(eval_names)
        # weight decay is decided on the unwrapped shapes: under FSDP every weight is a 1-D shard (hybrid/fsdp.py)
        self._decay_names = {n for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n}
        self.finite_check_every, self.compile_mode = finite_check_every, compile
        self.progress_every_s = progress_every_s
        self._val = {}  # dataloader index -> [loss_sum, correct, count] float64 on the device
        self._nonfinite = None  # [step of the first non-finite loss or -1, that loss] on the device

    def configure_model(self):
        if self.compile_mode and not getattr(self, "_compiled", False):
            self.model.compile(**({} if self.compile_mode is True else {"mode": self.compile_mode}))
            self._compiled = True

    def on_fit_start(self):
        for logger in self.loggers:  # W&B and CSV (hparams.yaml): which layout this run trained
            logger.log_hyperparams({"pattern": self.model.pattern})

    def configure_callbacks(self):
        """A progress line every so often when the trainer has no progress bar."""
        trainer = self._trainer
        if (trainer is not None and trainer.progress_bar_callback is None and self.progress_every_s
                and not any(isinstance(c, ProgressLog) for c in trainer.callbacks)):  # validate() after fit
            return [ProgressLog(self.progress_every_s)]
        return []

    def training_step(self, batch, batch_idx):
        inputs, targets = batch  # [batch, L] each
        out = self.model(inputs)
        loss_sum, correct, count = answer_stats(out.logits, targets)
        total = ranks.batch_totals(loss_sum, correct, count, out.aux_loss, out.expert_counts)  # over all ranks
        # DDP and FSDP average gradients over ranks: dividing by (global count / world size) makes that average the
        # gradient of the global batch's mean loss, as in one process at the global batch
        loss = loss_sum / (total.count.clamp(min=1) / ranks.world_size())
        mean_loss = total.loss_sum / total.count.clamp(min=1)  # the same on every rank: all stop on a NaN together
        self._note_nonfinite(mean_loss)
        if self._logs_this_step():
            self.log("train/loss", mean_loss, prog_bar=True)
            self.log("train/acc", total.correct / total.count.clamp(min=1), prog_bar=True)
            if out.expert_counts:  # the balancing loss is each rank's own batch's (its gradient too); logged: the mean
                self.log("train/aux_loss", total.aux_loss)
                shares = torch.stack([c.float() / c.sum() for c in total.expert_counts])
                self.log("train/expert_share_max", shares.max())  # 1/n_experts when balanced, 1 when collapsed
        return loss + self.aux_loss_weight * out.aux_loss

    def _logs_this_step(self) -> bool:
        """Whether this training step's metrics reach a logger: Lightning writes a step's logged values only every
        `trainer.log_every_n_steps` steps and drops the rest, while each `self.log` costs ~1 ms of host time (its
        result collection), as long as a tiny model's whole step on a GPU. Progress bar and progress lines show the
        last logged values."""
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        return every > 0 and (self.global_step + 1) % every == 0

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clips as Lightning does, also for a fused AdamW (`+lit.optimizer.fused=true`) under bf16-mixed: Lightning
        refuses every optimizer that unscales inside its step under mixed precision, because an fp16 loss scaler
        would hand it scaled gradients; bf16 has no scaler, so the gradients are true ones and clipping them is
        right. Under fp16 (a scaler) Lightning's refusal stands."""
        precision = self.trainer.precision_plugin
        if (gradient_clip_val and _optimizer_handles_unscaling(optimizer)  # Lightning's own test for its refusal
                and isinstance(precision, MixedPrecision) and precision.scaler is None):
            Precision.clip_gradients(precision, optimizer, gradient_clip_val,
                                     GradClipAlgorithmType(gradient_clip_algorithm or "norm"))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---------------------------------------------------------------- non-finite loss, without a sync per step
    def _note_nonfinite(self, loss: torch.Tensor) -> None:
        """Remember the first step whose loss is not finite, on the loss's device (no host sync)."""
        if self._nonfinite is None or self._nonfinite.device != loss.device:
            self._nonfinite = torch.full((2,), -1.0, dtype=torch.float64, device=loss.device)
        first = (self._nonfinite[0] < 0) & ~torch.isfinite(loss)
        step = torch.where(first, float(self.global_step), self._nonfinite[0])  # a Python scalar: no copy
        self._nonfinite = torch.stack([step, torch.where(first, loss.double(), self._nonfinite[1])])

    def check_finite(self) -> None:
        """Raise FloatingPointError naming the step when a non-finite training loss was seen (one host sync)."""
        if self._nonfinite is None:
            return
        step, value = self._nonfinite.tolist()
        if step >= 0:
            raise FloatingPointError(f"training loss is {value} at step {int(step)} (checked every "
                                     f"{self.finite_check_every} steps and before each checkpoint)")

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.global_step % self.finite_check_every == 0:
            self.check_finite()

    def on_save_checkpoint(self, checkpoint):
        self.check_finite()

    def on_train_end(self):
        self.check_finite()

    # ---------------------------------------------------------------- evaluation: sums on the device
    def _eval_step(self, batch, dataloader_idx):
        inputs, targets = batch
        chunk = eval_chunk_of(self._trainer)  # task.eval_chunk: long sequences through the inference cache
        stats = torch.stack([s.double() for s in chunked_stats(self.model, inputs, targets, chunk, answer_stats)])
        self._val[dataloader_idx] = self._val[dataloader_idx] + stats if dataloader_idx in self._val else stats

    def _eval_epoch_end(self, split: str):
        indices = sorted(self._val)  # the same on every rank: each evaluates its slice of every set
        totals = ranks.sum_over_ranks(torch.stack([self._val[i] for i in indices])) if indices else []
        for idx, sums in zip(indices, totals):
            loss_sum, correct, count = sums.tolist()  # sums over all ranks' examples, then the ratios
            name = self.eval_names[idx]
            self.log(f"{split}/loss_{name}", loss_sum / max(count, 1), add_dataloader_idx=False)
            self.log(f"{split}/acc_{name}", correct / max(count, 1), add_dataloader_idx=False,
                     prog_bar=idx == 0)
            if self.bytes_per_token:  # bits per byte: nats per token / ln 2 / bytes per token
                bpb = loss_sum / max(count, 1) / math.log(2) / self.bytes_per_token
                self.log(f"{split}/bpb_{name}", bpb, add_dataloader_idx=False)
        self._val.clear()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        named = [(plain_name(n), p) for n, p in self.model.named_parameters()]
        decay = [p for n, p in named if n in self._decay_names]
        no_decay = [p for n, p in named if n not in self._decay_names]
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
