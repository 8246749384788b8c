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



def _patch_lang_once_per_launch():
    """Triton's interpreter re-patches triton.language (inspect.getmembers over its modules) at every call of a
    @triton.jit helper inside a kernel, though the launch already patched the same modules and restores them after:
    ~20% of an interpreted scan test's time. Inside a launch, helpers whose modules it patched skip that; the launch's
    own patch and restore, and any call outside a launch, are Triton's. The patch only rebinds the same attributes."""
    try:
        import inspect

        import triton.language as tl
        from triton.runtime import interpreter
        patch, scope_cls = interpreter._patch_lang, interpreter._LangPatchScope
        launch = interpreter.GridExecutor.__call__
    except (ImportError, AttributeError):  # no triton, or an interpreter without these: run as it is
        return
    state = {"in_launch": False, "langs": None}  # langs: the modules the launch in progress patched

    def patch_lang(fn):
        langs = {id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core)}
        if state["in_launch"] and state["langs"] is not None and langs <= state["langs"]:
            return scope_cls()
        if state["in_launch"] and state["langs"] is None:
            state["langs"] = langs
        return patch(fn)

    def launch_once_patched(self, *args, **kwargs):
        state.update(in_launch=True, langs=None)
        try:
            return launch(self, *args, **kwargs)
        finally:
            state.update(in_launch=False, langs=None)

    interpreter._patch_lang = patch_lang
    interpreter.GridExecutor.__call__ = launch_once_patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_lang_once_per_launch()
