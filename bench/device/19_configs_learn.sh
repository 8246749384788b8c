#!/bin/bash
# Issue 19 (SWEEPS) item "every model config learns", on one GPU, from the repo root with .whl carried; at most 4.5
# minutes (CONFIGS_LIMIT seconds per run, default 250); results under $OUT (2 files): every config in conf/model/
# (not _base, not from_checkpoint) trained on the default MQAR task with its own defaults (1000 steps, lr 3e-3, bf16; the default init: normal(0, 1/sqrt(fan_in))),
# all side by side on the one GPU (2 CPU threads each); the final accuracy at the training length (64), and at
# 128 and 256. Expected: >= 0.9 at 64 for every config (before the init change, jamba_small stayed at chance).
source .whl/setup_project.sh || exit 1
ROOT=$(mktemp -d)
for f in conf/model/*.yaml; do
  m=$(basename "$f" .yaml)
  case "$m" in _base|from_checkpoint) continue ;; esac
  timeout ${CONFIGS_LIMIT:-250} python3 -m hybrid.train "model=$m" task=mqar trainer.enable_progress_bar=false threads=2 \
    "run_dir=$ROOT/$m" > "$ROOT/$m.log" 2>&1 &
done
wait
python3 - "$ROOT" > "$OUT/19_configs_learn.txt" <<'PY'
import json, sys
from pathlib import Path
print(f"{'model':<20} {'status':<10} {'acc L64':>8} {'acc L128':>9} {'acc L256':>9} {'seconds':>8}")
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    try:
        r = json.loads((run / "result.json").read_text())
    except (OSError, ValueError):
        print(f"{run.name:<20} {'no result':<10}"); continue
    m = r.get("metrics", {})
    acc = [m.get(f"val/acc_L{n}", float("nan")) for n in (64, 128, 256)]
    print(f"{run.name:<20} {r['status']:<10} {acc[0]:>8.3f} {acc[1]:>9.3f} {acc[2]:>9.3f} {r.get('seconds', 0):>8.1f}")
PY
tail -n 15 "$ROOT"/jamba_small.log > "$OUT/19_configs_jamba_small.log"
echo "== every model config on the default MQAR task (1000 steps, side by side on one GPU):"
cat "$OUT/19_configs_learn.txt"
