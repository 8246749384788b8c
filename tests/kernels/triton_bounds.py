"""Bounds checking for Triton kernels run in the interpreter (TRITON_INTERPRET=1).

The interpreter reads and writes host memory through raw addresses and never faults: a load past the end of a tensor
returns whatever lies there, where the GPU stops with "an illegal memory access". Inside `bounds_checked()` every
launch records the memory of the tensors passed to the kernel, and every load, store and atomic whose mask lets an
address through asserts that the address (and its element) lies inside one of them:

    with bounds_checked():
        y = ssd(x, dt, A, B, C, 64, backend="triton")   # raises OutOfBounds naming the kernel, program and offset

A tensor's memory is its own extent (from its first to its last element through its strides), not its storage's:
a kernel reading past a view it was given is a bug even where the storage goes on. A test file wraps every test
in it with an autouse fixture (tests/kernels/test_triton_ssd.py).
"""
import contextlib

import numpy as np
from triton.runtime import interpreter

_launch = {}  # the kernel being interpreted: name, and the [start, end) byte ranges of its tensor arguments


class OutOfBounds(AssertionError):
    pass


def _extent(t):
    """[start, end) in bytes of the elements a tensor can address (empty for no elements)."""
    t = interpreter._unwrap_tensor(t)
    if t.numel() == 0:
        return None
    span = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))  # strides >= 0 in torch
    return t.data_ptr(), t.data_ptr() + (span + 1) * t.element_size()


def _check(ptrs, mask, what):
    """Every masked-in address of one access, element included, inside one tensor argument (tensors that overlap,
    such as a view passed beside its base, count as one): a block running off its tensor into the next is caught."""
    if not _launch:
        return
    addr = np.asarray(ptrs.data, dtype=np.uint64).ravel()
    if mask is not None:
        addr = addr[np.broadcast_to(np.asarray(mask.data, dtype=bool), np.shape(ptrs.data)).ravel()]
    if addr.size == 0:
        return
    size = ptrs.get_element_ty().primitive_bitwidth // 8
    starts, ends = _launch["starts"], _launch["ends"]
    k = np.searchsorted(starts, addr, side="right") - 1  # the last region starting at or before each address
    inside = (k >= 0) & (addr + np.uint64(size) <= ends[np.maximum(k, 0)])
    if not inside.all() or (k != k[0]).any():
        bad = addr[~inside] if not inside.all() else addr
        regions = ", ".join(f"{names} [{hex(a)}, {hex(b)})" for names, a, b in _launch["regions"])
        raise OutOfBounds(f"{_launch['kernel']} program {tuple(interpreter.interpreter_builder.grid_idx)}: {what} of "
                          f"{addr.size} address(es) ({size} bytes each), {int((~inside).sum())} outside every tensor"
                          f"{'' if inside.all() else ', first ' + hex(int(bad[0]))}, spanning "
                          f"{len(set(k.tolist()))} region(s); tensor arguments: {regions}")


def _regions(named):
    """[(names, start, end)] of the tensor arguments' byte ranges, overlapping ones merged, sorted by start."""
    out = []
    for name, a, b in sorted(named, key=lambda r: r[1]):
        if out and a < out[-1][2]:
            out[-1] = (out[-1][0] + "/" + name, out[-1][1], max(out[-1][2], b))
        else:
            out.append((name, a, b))
    return out


@contextlib.contextmanager
def bounds_checked():
    """Within it, every interpreted load/store/atomic of a masked-in address outside the kernel's tensor arguments
    raises OutOfBounds (an AssertionError). Needs TRITON_INTERPRET=1 from before triton is first imported."""
    builder, executor = interpreter.InterpreterBuilder, interpreter.GridExecutor
    saved = {name: getattr(builder, name) for name in ("create_masked_load", "create_masked_store",
                                                        "create_atomic_rmw", "create_atomic_cas")}
    saved_init = executor._init_args_hst

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = saved_init(self, args_dev, kwargs)
        names = list(self.arg_names) + list(kwargs_hst)
        named = []
        for name, arg in zip(names, list(args_hst) + list(kwargs_hst.values())):
            span = _extent(arg) if hasattr(arg, "data_ptr") else None
            if span is not None:
                named.append((name, *span))
        regions = _regions(named)
        _launch.update(kernel=self.fn.__name__, regions=regions,
                       starts=np.array([r[1] for r in regions], dtype=np.uint64),
                       ends=np.array([r[2] for r in regions], dtype=np.uint64))
        return args_hst, kwargs_hst

    def load(self, ptrs, mask, other, cache_policy, is_volatile):
        _check(ptrs, mask, "a load")
        return saved["create_masked_load"](self, ptrs, mask, other, cache_policy, is_volatile)

    def store(self, ptrs, value, mask, cache_policy):
        _check(ptrs, mask, "a store")
        return saved["create_masked_store"](self, ptrs, value, mask, cache_policy)

    def rmw(self, op, ptr, val, mask, sem, scope):
        _check(ptr, mask, "an atomic")
        return saved["create_atomic_rmw"](self, op, ptr, val, mask, sem, scope)

    def cas(self, ptr, cmp, val, sem, scope):
        _check(ptr, None, "an atomic")
        return saved["create_atomic_cas"](self, ptr, cmp, val, sem, scope)

    executor._init_args_hst = init_args
    for name, fn in (("create_masked_load", load), ("create_masked_store", store), ("create_atomic_rmw", rmw),
                     ("create_atomic_cas", cas)):
        setattr(builder, name, fn)
    try:
        yield
    finally:
        executor._init_args_hst = saved_init
        for name, fn in saved.items():
            setattr(builder, name, fn)
        _launch.clear()
