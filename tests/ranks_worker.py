"""Run in each of two spawned processes by tests/test_ranks.py (imports only torch and hybrid.ranks: quick to start)."""
import torch
import torch.distributed as dist

from hybrid import ranks


def reduce_on_two_ranks(rank: int, init_file: str, out: dict) -> None:
    """Rank r's statistics are made up so that every total is known: sums over ranks, the aux loss's mean."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        total = ranks.batch_totals(torch.tensor(1.5 + rank, requires_grad=True), torch.tensor(3 + rank),
                                   torch.tensor(10 + 5 * rank), torch.tensor(0.25 * (rank + 1)),
                                   {0: torch.tensor([4, 0, 1]) * (rank + 1), 3: torch.tensor([rank, 1])})
        evaluation = ranks.sum_over_ranks(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64) * (rank + 1))
        out[rank] = {"loss_sum": total.loss_sum.item(), "correct": total.correct.item(), "count": total.count.item(),
                     "aux_loss": total.aux_loss.item(), "expert_counts": [c.tolist() for c in total.expert_counts],
                     "evaluation": evaluation.tolist(), "world": ranks.world_size(),
                     "devices": ranks.rank_devices(torch.device("cpu"))}
    finally:
        dist.destroy_process_group()
