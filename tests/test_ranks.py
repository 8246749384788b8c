"""hybrid.ranks in two real processes (gloo): a training step's totals and the evaluation sums over ranks, the MoE
balancing loss averaged and its expert counts summed; one process changes nothing."""
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from hybrid import ranks
from hybrid.checks import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from ranks_worker import reduce_on_two_ranks  # noqa: E402 (spawned processes import it by this name)


def test_two_ranks_reduce_sums_and_average_the_balancing_loss(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(reduce_on_two_ranks, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
    for rank in (0, 1):  # every rank gets the same totals
        got = out[rank]
        assert (got["loss_sum"], got["correct"], got["count"]) == (1.5 + 2.5, 3 + 4, 10 + 15)
        assert got["aux_loss"] == (0.25 + 0.5) / 2  # each rank's own balancing loss; logged: their mean
        assert got["expert_counts"] == [[12.0, 0.0, 3.0], [1.0, 2.0]]  # tokens per expert over the global batch
        assert got["evaluation"] == [[3.0, 6.0, 9.0]] and got["world"] == 2
        assert [d["rank"] for d in got["devices"]] == [0, 1] and all(d["device"] == "cpu" for d in got["devices"])


def test_one_process_is_untouched():
    loss_sum, count = torch.tensor(2.0, requires_grad=True) * 1, torch.tensor(5)
    counts = {1: torch.tensor([3, 4])}
    total = ranks.batch_totals(loss_sum, torch.tensor(1), count, torch.tensor(0.5), counts)
    assert ranks.world_size() == 1 and not total.loss_sum.requires_grad and total.loss_sum.item() == 2.0
    assert total.count is count and total.expert_counts[0] is counts[1]  # no copies, no extra kernels
    values = torch.ones(2, 3)
    assert ranks.sum_over_ranks(values) is values
    assert ranks.rank_devices(torch.device("cpu"))[0]["rank"] == 0


def test_resuming_on_another_number_of_ranks_is_refused(tmp_path):
    ranks.check_same_world(tmp_path, 4)  # no record yet: nothing to compare
    (tmp_path / "record.json").write_text(json.dumps({"distributed": None}))
    ranks.check_same_world(tmp_path, 4)  # killed before its Trainer set up
    (tmp_path / "record.json").write_text(json.dumps({"distributed": {"world_size": 2}}))
    ranks.check_same_world(tmp_path, 2)
    with pytest.raises(UsageError, match="trained on 2 ranks and this run has 4"):
        ranks.check_same_world(tmp_path, 4)
    ranks.check_same_world(tmp_path, 4, force=True)
