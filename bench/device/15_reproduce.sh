#!/bin/bash
# Issue 15 on one GPU, from the repo root with .whl carried (hydra-joblib-launcher packed: pack.sh hydra-joblib-launcher):
# the cpu profiles of three recipes (selective copying, MQAR vs width, induction extrapolation: 8 points) side by side
# on the GPU (hydra/launcher=local, all points at once: gpu_points=8), then the figures, tables and expectation checks.
# Results: $OUT/repro.tgz (figures/ and every point's record.json, result.json, config.yaml, metrics.csv; no checkpoints)
# and $OUT/repro.log. Usage: bash bench/device/15_reproduce.sh [seconds allowed, default 240]
source .whl/setup_project.sh > /dev/null || exit 1
limit=${1:-240}
start=$(date +%s)
for r in selective_copying mqar_vs_width induction_extrapolation; do
  timeout "$limit" python3 -m hybrid.reproduce "sweeps/$r.yaml" profile=cpu hydra/launcher=local \
    hydra.launcher.n_jobs=3 gpu_points=8 threads=2 > "/tmp/repro_$r.log" 2>&1 &
done
wait
echo "wall $(( $(date +%s) - start )) s for the three recipes side by side" | tee "$OUT/repro.log"
for r in selective_copying mqar_vs_width induction_extrapolation; do
  echo "== $r"; grep -v "^\[" "/tmp/repro_$r.log" | tail -14
done | tee -a "$OUT/repro.log"
find multirun figures \( -name record.json -o -name result.json -o -name config.yaml -o -name metrics.csv \
  -o -name "summary*" -o -name "*.png" -o -name "*.md" -o -name "*.csv" -o -name sweep.json \) -print0 2>/dev/null \
  | tar czf "$OUT/repro.tgz" --null -T -
