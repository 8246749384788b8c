"""Loaded by pytest before any test module is collected.

Without CUDA the Triton kernels run in Triton's interpreter. TRITON_INTERPRET=1 must be set before the first
import of any module that defines a kernel: `@triton.jit` reads it then. Test modules that import those modules
(tests/bench, tests/inference, ...) are collected before tests/kernels in a serial run, so setting it in each
kernel test module was too late there; set once here, it holds for every order, serial or under xdist.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _one_point_at_a_time():
    """Each test starts as a lone process would: a sweep test that runs a point in this process sets the points-at-
    once share of hybrid.threads (and torch's thread count), and a later in-process run would otherwise train with
    fewer threads than its subprocess twin, which changes float sums (a resumed run then differed at 1e-7)."""
    from hybrid import threads
    threads.set_parallel(1)
    before = torch.get_num_threads()
    yield
    threads.set_parallel(1)
    torch.set_num_threads(before)
