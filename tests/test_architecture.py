"""The import rules of docs/architecture.md, checked on the source (every import, at the top or inside a
function) and, where a rule says "loads no torch", in a fresh interpreter."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def imports(path: Path) -> set[str]:
    """The absolute module names a file imports (relative imports resolved against its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import (the project uses absolute ones)")
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "hybrid")
    return names


def files(folder: str) -> list[Path]:
    found = sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else [ROOT / folder]
    assert found, folder
    return found


def offending(folder: str, allowed_hybrid: tuple[str, ...], banned: tuple[str, ...] = ()) -> list[str]:
    """`file: module` for every import of `hybrid` outside allowed_hybrid, or of a banned package."""
    bad = []
    for path in files(folder):
        for name in imports(path):
            top = name.split(".")[0]
            outside = name.startswith("hybrid.") and not name.startswith(allowed_hybrid)
            if outside or name == "hybrid" and allowed_hybrid or top in banned:
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    return bad


def loads_torch(*modules: str) -> bool:
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip() == "True"


def test_the_layout_imports_no_torch():
    assert {n.split(".")[0] for n in imports(ROOT / "hybrid" / "layout.py")} <= set(sys.stdlib_module_names)
    assert not loads_torch("hybrid.layout")


def test_an_op_knows_no_module():
    assert offending("kernels", ("hybrid.kernels",), banned=("lightning", "hydra")) == []


def test_a_block_knows_no_trainer():
    assert offending("hybrid/blocks", ("hybrid.blocks", "hybrid.kernels"),
                     banned=("lightning", "hydra", "omegaconf")) == []


def test_tasks_know_no_model():
    assert offending("tasks", ("hybrid.tasks",)) == []


@pytest.mark.parametrize("part", ["hybrid/figures.py", "hybrid/sweep/collect.py"])
def test_figures_read_records_not_models(part):
    models = ("hybrid.model", "hybrid.blocks", "hybrid.kernels", "hybrid.lit", "hybrid.train", "hybrid.tasks")
    bad = [n for n in imports(ROOT / part) if n.startswith(models) or n.split(".")[0] in ("torch", "lightning")]
    assert bad == []


def test_figures_and_collection_load_no_torch():
    assert not loads_torch("hybrid.figures", "hybrid.sweep.collect")


def test_nothing_imports_hydra_internals():
    users = [f"{p.relative_to(ROOT)}" for folder in ("hybrid", "kernels", "tasks") for p in files(folder)
             if any(n.startswith("hydra._internal") for n in imports(p))]
    assert users == []
