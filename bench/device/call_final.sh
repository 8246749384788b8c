#!/bin/bash
# Session 4, device call 3 (coordinator), ~430 s:
#   1. side by side on the GPU (~230 s): issue 19's every-config-learns check (bench/device/19_configs_learn.sh) and
#      issue 15's cpu profiles of mqar_vs_width and induction_extrapolation (after the MQAR task fix and the new
#      init), all points at once (hydra/launcher=local, gpu_points = all, threads=1);
#   2. quiet: issue 18's python -m hybrid.bench generate --device cuda (the empty-cache prefill; no mamba-ssm here);
#   3. quiet: issue 12's python -m hybrid.bench model --stacks mamba jamba --no-blocks with the unrolled backward
#      (bwd_kernel=0, session 3's default) and with the rolled prefetching backward ({"bwd_kernel": 1, "bwd_prefetch": 1}), one process each.
# Results: $OUT/results.tgz (re-packed after each step).
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/configs $R/i12 $R/i18
pack() { tar czf "$OUT/results.tgz" -C $R . ; }
TRAIN_S=${TRAIN_S:-230}; RECIPES="mqar_vs_width induction_extrapolation"
(CONFIGS_LIMIT=$((TRAIN_S - 15)) OUT=$R/configs bash bench/device/19_configs_learn.sh > $R/configs/stdout.txt 2>&1) &
cfg=$!
total=14; for r in $RECIPES; do
  n=$(python3 -m hybrid.reproduce sweeps/$r.yaml profile=cpu --dry-run 2>/dev/null | sed -n 's/.*: \([0-9]*\) points in.*/\1/p')
  total=$((total + n)); eval "n_$r=$n"; done
for r in $RECIPES; do
  eval "n=\$n_$r"
  ( s=$(date +%s); timeout -k 10 $((TRAIN_S - 15)) python3 -m hybrid.reproduce sweeps/$r.yaml profile=cpu \
      hydra/launcher=local hydra.launcher.n_jobs=$n gpu_points=$total threads=1 > $R/$r.log 2>&1
    echo "exit $? after $(( $(date +%s) - s )) s" >> $R/$r.log ) &
done
wait
pkill -KILL -f "hybrid.train" 2>/dev/null
for r in $RECIPES; do
  python3 -m hybrid.reproduce sweeps/$r.yaml profile=cpu --figures-only >> $R/$r.log 2>&1
  echo "== $r"; grep -v "^\[" $R/$r.log | tail -14
done
echo "== configs"; cat $R/configs/19_configs_learn.txt
cp -r figures $R/ 2>/dev/null
find multirun \( -name record.json -o -name result.json -o -name config.yaml -o -name metrics.csv -o -name "summary*" \
  -o -name sweep.json \) -print0 | tar czf $R/multirun.tgz --null -T -
el "trainings"; pack

timeout 100 python3 -m hybrid.bench generate --device cuda --out $R/i18/generate_cuda.json > $R/i18/bench.log 2>&1
el "18 generate"; grep -v "^  " $R/i18/bench.log | tail -24; pack

for cfgname in unrolled rolled_pf; do
  c='{"bwd_kernel": 0, "bwd_prefetch": 0}'; [ $cfgname = rolled_pf ] && c='{"bwd_kernel": 1, "bwd_prefetch": 1}'
  left=$(( ${END_S:-425} - ($(date +%s) - T0) )); (( left < 20 )) && break
  timeout $((left / 2 > 45 ? left / 2 : left)) python3 -m hybrid.bench model --device cuda --stacks mamba jamba \
    --no-blocks --backends triton --config "$c" --out $R/i12/model_cuda_$cfgname.json > $R/i12/model_$cfgname.log 2>&1
  el "12 model bench $cfgname"; grep -v "^  " $R/i12/model_$cfgname.log | tail -8; pack
done
el done
