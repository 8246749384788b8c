"""CPU threads per process: the usable cores (affinity, cgroup quota) shared among the points that run at once."""
import os

import pytest
import torch

from hybrid import threads


def test_default_threads_share_the_usable_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 16)
    monkeypatch.setattr(threads, "_parallel", 1)  # another test in this process may have called set_parallel
    assert threads.default_threads(on_gpu=False) == 16
    assert threads.default_threads(on_gpu=False, parallel=3) == 5
    assert threads.default_threads(on_gpu=True) == 4  # a GPU run only feeds the GPU
    assert threads.default_threads(on_gpu=False, parallel=64) == 1


def test_usable_cpus_follow_the_affinity():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))


def test_set_threads_respects_omp_num_threads_and_checks_values(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.set_threads(None, on_gpu=False) == 1 and torch.get_num_threads() == 1
        assert threads.set_threads(2, on_gpu=False) == 2  # an explicit value wins
        with pytest.raises(ValueError, match="threads=0; must be >= 1"):
            threads.set_threads(0, on_gpu=False)
    finally:
        torch.set_num_threads(before)
