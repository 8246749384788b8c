"""What a run needs of its ranks under DDP / FSDP (conf/trainer/ddp.yaml, conf/trainer/fsdp.yaml).

  world_size()        processes in the default process group (1 without one)
  sum_over_ranks(t)   t summed over all ranks, the same tensor on every rank; t itself in one process
  batch_totals(...)   a training step's statistics over the global batch (one all_reduce per step)
  launch_rank()       this process's global rank as its launcher wrote it into the environment, before any Trainer
                      or process group exists: hybrid.train lets only rank 0 take the run-dir lock and write files
  rank_devices()      every rank's {rank, host, device}, for record.json
  check_same_world()  a resumed run on another number of ranks is refused: it would train on another global batch

sum_over_ranks calls torch.distributed.all_reduce directly rather than Lightning's `strategy.reduce`, which puts a
barrier (a host sync on GPUs) before every reduction; the training step reduces once per step.
"""
import json
import os
import socket
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from hybrid.checks import UsageError

# hybrid.lit logs evaluation metrics that are already sums over all ranks (sum_over_ranks, then one division), so
# Lightning's advice to log them with sync_dist=True (which would average per-rank ratios) does not apply.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/")

# Global rank as launchers set it: torchrun (RANK), SLURM's srun (SLURM_PROCID), Lightning's subprocess launcher
# (NODE_RANK and LOCAL_RANK, set in every process it starts; rank 0 is the one with both 0 or unset).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def world_size() -> int:
    """Processes in the default process group; 1 when there is none (one process, or before the Trainer set up)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """values (any shape, no gradient needed) summed over all ranks; `values` itself in one process."""
    if world_size() == 1:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


class BatchTotals(NamedTuple):
    """A training step's statistics over all ranks: sums of the answer loss, correct answers and answer positions,
    the MoE balancing loss averaged over ranks, and each MoE block's tokens per expert summed over ranks."""
    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor
    aux_loss: torch.Tensor
    expert_counts: list[torch.Tensor]


def batch_totals(loss_sum: torch.Tensor, correct: torch.Tensor, count: torch.Tensor, aux_loss: torch.Tensor,
                 expert_counts: dict[int, torch.Tensor]) -> BatchTotals:
    """Scalars and {block: [n_experts]} counts of this rank's batch -> BatchTotals of the global batch (float64,
    one all_reduce); in one process the inputs themselves (detached), with no extra kernel."""
    counts = list(expert_counts.values())
    world = world_size()
    if world == 1:
        return BatchTotals(loss_sum.detach(), correct, count, aux_loss.detach(), counts)
    scalars = torch.stack([loss_sum.detach().double(), correct.double(), count.double(), aux_loss.detach().double()])
    flat = sum_over_ranks(torch.cat([scalars, *[c.double() for c in counts]]))
    sizes = [c.numel() for c in counts]
    return BatchTotals(flat[0], flat[1], flat[2], flat[3] / world, list(flat[4:].split(sizes)) if counts else [])


def launch_rank() -> int:
    """0 when this process is global rank 0 (or not part of a multi-process launch), else a nonzero rank."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0").strip() or "0"
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def rank_devices(device: torch.device) -> list[dict]:
    """[{rank, host, device}] of every rank, in rank order (one all_gather_object); this process alone without a
    process group. `device` is this rank's root device; a CUDA device is named with its model."""
    name = str(device)
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    mine = {"rank": dist.get_rank() if world_size() > 1 else 0, "host": socket.gethostname(), "device": name}
    if world_size() == 1:
        return [mine]
    everyone = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def check_same_world(run_dir: Path, world_size: int, force: bool = False) -> None:
    """Raise a UsageError when the attempt that wrote run_dir/record.json ran on another number of ranks (unless
    force): data.batch_size is per rank, so the resumed run would continue on another global batch. Nothing to
    check when the record names no world size (written before the run's Trainer set up)."""
    try:
        before = (json.loads((Path(run_dir) / "record.json").read_text()).get("distributed") or {}).get("world_size")
    except (OSError, ValueError):
        return
    if before is not None and int(before) != int(world_size) and not force:
        raise UsageError(f"run directory {run_dir} was trained on {before} ranks and this run has {world_size} "
                         f"(trainer.num_nodes x trainer.devices): data.batch_size is per rank, so it would resume on "
                         f"another global batch. Resume on {before} ranks, or pass resume=force to resume anyway.")
