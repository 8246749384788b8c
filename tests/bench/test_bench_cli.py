"""The benches' command lines: a tiny CPU model bench runs and writes long-format rows (not timed: the numbers are
not checked, only that every stack and block produced one); bad sizes are usage errors (exit status 2) naming the
value; non-default shapes never write over a committed default result."""
import json

import pytest

from hybrid.bench.__main__ import main


def test_model_bench_on_the_cpu(tmp_path):
    out = tmp_path / "model.json"
    assert main(["model", "--device", "cpu", "--batch", "1", "--length", "8", "--d-model", "16", "--layers", "4",
                 "--vocab", "32", "--steps", "2", "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    train = {(r["provider"], r["scan_backend"], r["ssd_backend"], r["pattern"])
             for r in data["rows"] if r["op"] == "train"}
    assert train == {("mamba", "reference", None, "MMMM"), ("jamba", "reference", None, "MFMF"),
                     ("jamba_moe", "reference", None, "MEMF"), ("transformer", None, None, "AFAF"),
                     ("mamba2", None, "reference", "SSSS"), ("nemotron_h", None, "reference", "SFSF")}
    blocks = {(r["provider"], r["mode"]) for r in data["rows"] if r["op"] == "block"}
    providers = ("M scan=reference", "S ssd=reference", "A", "F", "E")
    assert blocks == {(p, m) for p in providers for m in ("fwd", "fwd+bwd")}
    for r in data["rows"]:
        assert "error" not in r and r["median_ms"] > 0 and r["device"] and r["commit"] is not None
    assert all(r["tokens_per_s"] > 0 and r["params"] > 0 for r in data["rows"] if r["op"] == "train")


@pytest.mark.parametrize("argv,message", [
    (["scan", "--device", "cpu", "--lengths", "-5"], "-5 is not allowed"),
    (["model", "--device", "cpu", "--batch", "0"], "0 is not allowed"),
    (["blocks", "--d-model", "0"], "0 is not allowed"),
    (["train_step", "--length", "abc"], "'abc' is not an integer"),
    (["blocks", "--d-model", "16"], "need an explicit --out"),
    (["scan", "--device", "cpu", "--lengths", "64"], "need an explicit --out"),
    (["model", "--device", "cpu", "--layers", "2"], "need an explicit --out"),
    (["model", "--device", "cpu", "--stacks", "mamba2"], "need an explicit --out"),
    (["model", "--device", "cpu", "--stacks", "mamba3"], "invalid choice: 'mamba3'"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
