"""`python -m hybrid.bench model --blocks ...`: the block rows of the chosen kinds only (mamba-ssm's Mamba goes with M,
its Mamba2 with S); an unknown kind is a usage error."""
import json

import pytest

from hybrid.bench.__main__ import main


def test_block_rows_of_chosen_kinds(tmp_path):
    out = tmp_path / "model.json"
    assert main(["model", "--device", "cpu", "--batch", "1", "--length", "8", "--d-model", "16", "--layers", "2",
                 "--vocab", "32", "--steps", "2", "--threads", "1", "--stacks", "mamba", "--blocks", "M", "F",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["op"], r["provider"]) for r in rows} == {("train", "mamba"), ("block", "M scan=reference"),
                                                        ("block", "F")}


def test_unknown_block_kind_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["model", "--device", "cpu", "--blocks", "X"])
    assert exc.value.code == 2
    assert "invalid choice: 'X'" in capsys.readouterr().err
