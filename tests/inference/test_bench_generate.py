"""`python -m hybrid.bench generate` at toy sizes on the CPU: every model and batch has a row with its figures,
Mamba's cache does not grow with the prompt while the transformer's does, and toy shapes need --out."""
import json

import pytest

from hybrid.bench.generate import main


def test_generate_bench_rows(tmp_path):
    out = tmp_path / "g.json"
    args = ["--device", "cpu", "--batches", "1", "2", "--prompt", "8", "--new", "3", "--vocab", "32", "--d-model",
            "16", "--layers", "2", "--sweep", "8", "32", "--sweep-steps", "2", "--reps", "1", "--out", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    gen = {(r["provider"], r["batch"]): r for r in rows if r["op"] == "generate"}
    assert set(gen) == {(m, b) for m in ("mamba", "jamba", "transformer") for b in (1, 2)}
    for r in gen.values():
        assert "error" not in r and r["decode_tokens_per_s"] > 0 and r["generate_tokens_per_s"] > 0
        assert r["prefill_ms"] > 0 and r["cache_bytes"] > 0
    sweep = {(r["provider"], r["prompt"]): r["cache_bytes"] for r in rows if r["op"] == "decode_vs_prompt"}
    assert sweep[("mamba", 8)] == sweep[("mamba", 32)]
    assert sweep[("transformer", 32)] > sweep[("transformer", 8)]


def test_toy_shapes_need_out():
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--prompt", "8"])
