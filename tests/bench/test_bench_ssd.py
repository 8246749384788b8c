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


@pytest.mark.parametrize("argv,message", [
    (["ssd", "--device", "cpu", "--lengths", "0"], "0 is not allowed"),
    (["ssd", "--device", "cpu", "--lengths", "64"], "need an explicit --out"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
