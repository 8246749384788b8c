"""tests/kernels/triton_bounds.py, the interpreter's bounds check, catches what the GPU would fault on."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")
import triton.language as tl
from triton_bounds import OutOfBounds, bounds_checked

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="checks the interpreter")


@triton.jit
def _copy(X, Y, n_load, n_store, STRIDE, BLOCK: tl.constexpr):
    """Y[i] = X[i * STRIDE] for i < n_store, loading i < n_load (a mask one too wide is the bug to catch)."""
    i = tl.arange(0, BLOCK)
    tl.store(Y + i, tl.load(X + i * STRIDE, mask=i < n_load, other=0.0), mask=i < n_store)


def run(n_load, n_store, stride=1, x_len=10, y_len=10):
    base = torch.randn(2 * x_len + y_len)  # x and y inside one storage: only each tensor's own extent counts
    x, y = base[:x_len], base[x_len + 1:x_len + 1 + y_len]
    with bounds_checked():
        _copy[(1,)](x, y, n_load, n_store, stride, BLOCK=16)
    return x, y


def test_in_bounds_runs_and_computes():
    x, y = run(10, 10)
    assert torch.equal(y, x)


@pytest.mark.parametrize("n_load,n_store,stride,what", [(11, 10, 1, "a load"), (10, 11, 1, "a store"),
                                                        (5, 4, 3, "a load")])
def test_a_mask_one_too_wide_is_caught_inside_the_storage_and_in_the_next_tensor(n_load, n_store, stride, what):
    with pytest.raises(Exception) as err:  # the interpreter re-raises it as an InterpreterError
        run(n_load, n_store, stride)
    cause = err.value if isinstance(err.value, OutOfBounds) else err.value.__cause__
    assert isinstance(cause, OutOfBounds) and what in str(cause) and "_copy program (0, 0, 0)" in str(cause)
