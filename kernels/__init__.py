"""Fused ops behind one dispatching function each: `selective_scan` (Mamba-1), `ssd` (Mamba-2), `attention`.

This folder installs as `hybrid.kernels` (pyproject's package-dir). Run from the repo root (`python -m ...`, where
the current directory leads sys.path) it can also be found as a top-level `kernels`: the name of Hugging Face's
`kernels` package, which transformers (>= 5.25 depends on it) imports. Imported under that name while that package is
installed, this module hands the name over to it instead of shadowing it.
"""
import sys

if __name__ == "kernels":
    import importlib.machinery
    import importlib.metadata
    import importlib.util
    import os

    def _hand_over_to_the_installed_kernels():
        try:
            importlib.metadata.distribution("kernels")
        except importlib.metadata.PackageNotFoundError:
            return False
        repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != repo_root]
        spec = importlib.machinery.PathFinder.find_spec("kernels", path)
        if spec is None or spec.loader is None:
            return False
        module = importlib.util.module_from_spec(spec)
        sys.modules["kernels"] = module  # the import statement returns what sys.modules holds after this file ran
        spec.loader.exec_module(module)
        return True

    _handed_over = _hand_over_to_the_installed_kernels()
else:
    _handed_over = False

if not _handed_over:
    from hybrid.kernels.attention import attention
    from hybrid.kernels.selective_scan import selective_scan
    from hybrid.kernels.ssd import ssd

    __all__ = ["attention", "selective_scan", "ssd"]
