"""Loaded by pytest before any test module is collected.

Without CUDA the Triton kernels run in Triton's interpreter. TRITON_INTERPRET=1 must be set before the first
import of any module that defines a kernel: `@triton.jit` reads it then. Test modules that import those modules
(tests/bench, tests/inference, ...) are collected before tests/kernels in a serial run, so setting it in each
kernel test module was too late there; set once here, it holds for every order, serial or under xdist.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
