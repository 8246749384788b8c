"""`python -m hybrid.describe`: the three ways in of the issue's examples, as a user runs them."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("overrides, pattern", [
    (["model=jamba_small"], "MFMEMFMEAFMEMFME"),
    (["model.layout.pattern=MFMFAFMF"], "MFMFAFMF"),
    (["model.layout.n_layers=24", "model.layout.ratios.A=0.125", "model.layout.ratios.F=0.5"], None),
])
def test_describe_cli(overrides, pattern):
    out = subprocess.run([sys.executable, "-m", "hybrid.describe", *overrides], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    first = next(line for line in out.stdout.splitlines() if line.startswith("pattern")).split()
    assert first[0] == "pattern" and (pattern is None or first[1] == pattern)
    if pattern is None:
        assert len(first[1]) == 24 and first[1].count("A") == 3 and first[1].count("F") == 12
    assert "total" in out.stdout and "FLOPs per token" in out.stdout


def test_describe_bad_symbol_names_it():
    out = subprocess.run([sys.executable, "-m", "hybrid.describe", "model.layout.pattern=MXA"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and "unknown block symbol 'X'" in out.stderr


def test_describe_counts_match_model():
    from hybrid.describe import describe
    from hybrid.model import HybridLM
    model = HybridLM(vocab_size=10, d_model=16, layout="MAF", blocks={"A": {"n_heads": 2}, "M": {"d_state": 4}})
    text = describe(model, 128)
    total = sum(p.numel() for p in model.parameters())
    assert f"{total:,}" in text
    assert model.flops_per_token(128) > model.flops_per_token(16)
