"""The resume contract of our data modules, checked the same way for each: after k training batches state_dict
says so, and a fresh module loaded from it yields exactly the batches an uninterrupted one would have yielded next."""
import torch


def assert_resumes(make_dm, k: int = 3, n_after: int = 2):
    """Check the contract on modules from `make_dm()`; returns (the resumed module, the uninterrupted run's first
    k + n_after batches) for further checks."""
    reference = [b for _, b in zip(range(k + n_after), iter(make_dm().train_dataloader()))]
    first = make_dm()
    stream = iter(first.train_dataloader())
    for _ in range(k):
        next(stream)
    assert first.state_dict() == {"batches_consumed": k}
    fresh = make_dm()
    fresh.load_state_dict(first.state_dict())
    resumed = iter(fresh.train_dataloader())
    for expected in reference[k:]:
        got = next(resumed)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    return fresh, reference
