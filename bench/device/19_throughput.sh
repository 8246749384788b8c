#!/bin/bash
# Issue 19 (SWEEPS) on one GPU, from the repo root with .whl carried; at most 4.5 minutes; results under $OUT (4 files):
#   1. bench/device/19_throughput.py: steps/s of a bare PyTorch loop vs hybrid.train (default, progress bar on,
#      fused AdamW, lit.compile, lit.compile=reduce-overhead) for the demo (MAF, d_model 64) and jamba_small shapes
#      on MQAR (batch 64, length 64), bf16 -> $OUT/19_throughput.jsonl. Target: hybrid.train >= 60% of the bare loop.
#   2. a 12-point sweep of the demo on MQAR (seeds 0-11, 100 steps each) on one GPU, its wall time with k = 1 and 4
#      points at once (12 too when time is left): k multiruns side by side, each over 12/k seeds (threads=16/k), as
#      hydra/launcher=local hydra.launcher.n_jobs=k gpu_points=k, which needs hydra-joblib-launcher (also timed at
#      k=4 when that plugin is importable here) -> $OUT/19_sweep.txt.
source .whl/setup_project.sh || exit 1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
# PARTS (python parts: bare syncs train; "none" skips them), SWEEP_KS (the k values of the sweep, e.g. "1 4 12"; ""
# skips it)
[ "${PARTS:-}" = none ] || timeout ${THROUGHPUT_S:-130} python3 bench/device/19_throughput.py "$OUT/19_throughput.jsonl" \
  ${PARTS:-bare train} > "$OUT/19_throughput.log" 2>&1
touch "$OUT/19_throughput.jsonl"

sweep() {  # sweep K LIMIT: 12 points, K multiruns at once, each killed after LIMIT seconds; prints the wall time
  local k=$1 dir="$SWEEP_ROOT/k$1" start j
  start=$(date +%s.%N)
  for ((j = 0; j < k; j++)); do
    timeout "$2" python3 -m hybrid.train -m model=demo task=mqar "seed=$(seq -s, "$j" "$k" 11)" trainer.max_steps=100 \
      trainer.val_check_interval=100 checkpoint_every=100 data.eval_batches=1 trainer.enable_progress_bar=false \
      "threads=$((16 / k > 0 ? 16 / k : 1))" "hydra.sweep.dir=$dir/$j" > "$dir.$j.log" 2>&1 &
  done
  wait
  echo "k=$k wall $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s, completed" \
    "$(grep -l '"status": "completed"' -r "$dir" --include=result.json 2>/dev/null | wc -l)/12"
}
SWEEP_ROOT=$(mktemp -d)
{
  for k in ${SWEEP_KS-1 4 12}; do
    if (( k == 1 || SECONDS < 230 )); then sweep "$k" $(( k == 1 ? 100 : 60 )); fi
  done
  if [ -n "${SWEEP_KS-x}" ] && python3 -c "import hydra_plugins.hydra_joblib_launcher" 2>/dev/null \
      && (( SECONDS < 230 )); then
    start=$(date +%s.%N)
    timeout 40 python3 -m hybrid.train -m model=demo task=mqar "seed=range(0,12)" trainer.max_steps=100 \
      trainer.val_check_interval=100 checkpoint_every=100 data.eval_batches=1 trainer.enable_progress_bar=false \
      hydra/launcher=local hydra.launcher.n_jobs=4 gpu_points=4 "hydra.sweep.dir=$SWEEP_ROOT/joblib" > "$SWEEP_ROOT/joblib.log" 2>&1
    echo "joblib n_jobs=4 gpu_points=4 wall $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s"
  else
    echo "hydra-joblib-launcher not importable here (or no time left): the launcher path itself not timed"
  fi
} > "$OUT/19_sweep.txt" 2>&1
tail -30 "$SWEEP_ROOT"/k4.0.log > "$OUT/19_sweep_k4_point.log" 2>/dev/null  # one point's log, for failures

echo "== steps/s, bare loop vs hybrid.train (bf16, MQAR batch 64 x 64):"
python3 - "$OUT/19_throughput.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bare = {r["shape"]: r["steps_per_s"] for r in rows if r.get("variant") == "bare loop"}
for r in rows:
    rate = r.get("steps_per_s")
    share = f"{rate / bare[r['shape']]:6.0%}" if rate and r["shape"] in bare else "      "
    print(f"{r['shape']:<12} {r['variant']:<40} " + (f"{rate:8.1f} {share}" if rate else r.get("error", "")))
EOF
echo "== 12-point sweep on one GPU:"; cat "$OUT/19_sweep.txt"
