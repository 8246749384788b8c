"""kernels/ installs as hybrid.kernels, but run from the repo root (the current directory first on sys.path, as with
`python -m`) it is also found as a top-level `kernels`, Hugging Face's package name, which transformers (>= 5.25)
imports: there it must hand the name over to that package where installed, and stay ours where not."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = ("import kernels, hybrid.kernels as ours, pathlib; "
         f"repo = pathlib.Path(kernels.__file__).resolve().parent == pathlib.Path({str(REPO / 'kernels')!r}); "
         "print('repo' if repo else 'installed', getattr(kernels, 'MARK', '-'), callable(ours.ssd))")


def run_from_repo_root(code: str, extra_path: Path | None = None) -> list[str]:
    env = {"PYTHONPATH": str(extra_path) if extra_path else "", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def installed() -> bool:
    try:
        importlib.metadata.distribution("kernels")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_an_installed_kernels_package_wins_over_the_repo_folder(tmp_path):
    site = tmp_path / "site"  # a stand-in for Hugging Face's distribution: the package and its metadata
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("MARK = 'huggingface'\n")
    (site / "kernels-0.19.1.dist-info").mkdir()
    (site / "kernels-0.19.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 0.19.1\n")
    assert run_from_repo_root(PROBE, site) == ["installed", "huggingface", "True"]


def test_this_environment_gets_the_installed_package_or_ours():
    assert run_from_repo_root(PROBE) == ["installed" if installed() else "repo", "-", "True"]


def test_transformers_models_load_from_the_repo_root():
    """The symptom: with transformers 5.25 (which installs `kernels`) every model class failed to import from the
    repo root (`cannot import name 'CUDAProperties' from 'kernels'`)."""
    pytest.importorskip("transformers")
    assert run_from_repo_root("import transformers; print(transformers.MambaForCausalLM.__name__)") \
        == ["MambaForCausalLM"]
