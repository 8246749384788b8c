"""`python -m hybrid.bench ssd` on the CPU: tiny lengths run and write long-format rows for every provider and mode
(not timed: the numbers are not checked); non-default shapes need --out, bad lengths are usage errors."""
import json

import pytest

from hybrid.bench.__main__ import main


def test_ssd_bench_on_the_cpu(tmp_path):
    out = tmp_path / "ssd.json"
    assert main(["ssd", "--device", "cpu", "--lengths", "8", "70", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    seen = {(r["provider"], r["mode"], r["L"]) for r in data["rows"]}
    providers = {"ours:reference", "scan:mamba1 N=16", "attention:sdpa 2x128"}
    assert seen == {(p, m, L) for p in providers for m in ("fwd", "fwd+bwd") for L in (8, 70)}
    assert all("error" not in r and r["median_ms"] > 0 for r in data["rows"])
    assert data["shape"]["N"] == 64 and data["shape"]["chunk"] == 64


def test_ssd_only_stages_and_block_rows(tmp_path):
    """--ssd-only leaves the scan and attention out; --stages adds per-kernel rows (on the CPU the top-level
    operators) summing to the '(all kernels)' row; --block adds the S block's row (mamba-ssm absent here)."""
    out = tmp_path / "ssd.json"
    assert main(["ssd", "--device", "cpu", "--lengths", "8", "16", "--ssd-only", "--providers-first", "--stages", "70",
                 "--block", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    ssd_rows = [(r["provider"], r["L"]) for r in rows if r["op"] == "ssd"]
    assert ssd_rows == [("ours:reference", L) for L in (8, 8, 16, 16)]  # fwd, fwd+bwd per length
    assert not [r for r in rows if r["op"] in ("scan", "attention")]
    stages = [r for r in rows if r["op"] == "ssd_stage"]
    total = [r for r in stages if r["kernel"] == "(all kernels)"]
    assert len(total) == 1 and total[0]["median_ms"] > 0 and len(stages) > 2
    assert sum(r["median_ms"] for r in stages if r is not total[0]) == pytest.approx(total[0]["median_ms"])
    block = [r for r in rows if r["op"] == "block"]
    assert [r["provider"] for r in block] == ["ours:S reference"] and block[0]["median_ms"] > 0
    assert block[0]["first_round_median_ms"] > 0  # timed twice (order effects): the first round kept beside


@pytest.mark.parametrize("argv,message", [
    (["ssd", "--device", "cpu", "--lengths", "0"], "0 is not allowed"),
    (["ssd", "--device", "cpu", "--lengths", "64"], "need an explicit --out"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
