"""Benchmark results (bench/results/*.json, long-format rows) as the long table that figures are drawn from, for
recipes that plot measurements instead of training runs (a recipe's `bench:`, e.g. sweeps/scan_speed.yaml).

Each row of a result file becomes one row: every key of the row a column (op, provider, mode, L, ...),
`metric` = the row's mode (fwd, fwd+bwd), `value` = its median_ms, `point` = file:op:provider, status completed.
"""
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def long_table(paths) -> pd.DataFrame:
    """The rows of the given result files (paths relative to the repository root, or absolute)."""
    rows = []
    for name in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(name) if Path(name).is_absolute() else ROOT / name
        if not path.exists():
            raise ValueError(f"bench result {name} does not exist; run the benchmark that writes it "
                             f"(python -m hybrid.bench ...), or pick one of "
                             f"{sorted(p.name for p in (ROOT / 'bench' / 'results').glob('*.json'))}")
        data = json.loads(path.read_text())
        for row in data.get("rows", []):
            flat = {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
            rows.append({**flat, "point": f"{path.name}:{row.get('op')}:{row.get('provider')}",
                         "status": "completed", "seed": 0, "metric": row.get("mode", "time"),
                         "value": float(row["median_ms"])})
    return pd.DataFrame(rows)
