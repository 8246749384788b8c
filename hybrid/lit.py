"""The LightningModule: next-token loss on the task's answer positions, the MoE balancing loss, AdamW with
warmup + cosine, accuracy per evaluation length. Lightning does the loop, precision, clipping, checkpoints."""
import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from hybrid.chunked_eval import chunked_stats, eval_chunk_of
from hybrid.model import HybridLM

IGNORE = -100  # targets outside the answer positions


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
    correct = (flat_logits.argmax(-1)[mask] == flat_targets[mask]).sum()
    return loss_sum, correct, mask.sum()


class HybridLitModule(L.LightningModule):
    """Trains a HybridLM. Metrics: train/loss, train/acc, train/aux_loss, train/expert_share_max, and per
    evaluation set (its name from the data module, e.g. "L256"): val/loss_<name>, val/acc_<name>, and for byte-level
    data (bytes_per_token set) val/bpb_<name>."""

    def __init__(self, model: HybridLM, optimizer: Callable, scheduler: Callable | None = None,
                 aux_loss_weight: float = 0.01, eval_names: Sequence[str] = ("L",),
                 bytes_per_token: float | None = None):
        super().__init__()
        self.bytes_per_token = bytes_per_token  # set for byte-level data (audio, text): adds val/bpb_<name>
        self.model, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler
        self.aux_loss_weight, self.eval_names = aux_loss_weight, list(eval_names)
        self._val = defaultdict(lambda: torch.zeros(3, dtype=torch.float64))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch  # [batch, L] each
        out = self.model(inputs)
        loss_sum, correct, count = answer_stats(out.logits, targets)
        loss = loss_sum / count.clamp(min=1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", correct / count.clamp(min=1), prog_bar=True)
        if out.expert_counts:
            self.log("train/aux_loss", out.aux_loss)
            shares = torch.stack([c.float() / c.sum() for c in out.expert_counts.values()])
            self.log("train/expert_share_max", shares.max())  # 1/n_experts when balanced, 1 when collapsed
        return loss + self.aux_loss_weight * out.aux_loss

    def _eval_step(self, batch, dataloader_idx):
        inputs, targets = batch
        chunk = eval_chunk_of(self.trainer)  # task.eval_chunk: long sequences through the inference cache
        stats = chunked_stats(self.model, inputs, targets, chunk, answer_stats)
        self._val[dataloader_idx] += torch.stack([s.double().cpu() for s in stats])

    def _eval_epoch_end(self, split: str):
        for idx, (loss_sum, correct, count) in sorted(self._val.items()):
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
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2 or "A_log" in n]
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
