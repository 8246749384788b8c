#!/bin/bash
# Session 4, device call 2 (coordinator): trainings that need the GPU's capacity side by side, in LIMIT seconds
# (default 470): issue 19's every-config-learns check (bench/device/19_configs_learn.sh) and issue 15's recipes
# RECIPES (default: mqar_vs_width attention_ratio niah_heatmap) at profile gpu, every point of every recipe at once
# on the one GPU (hydra/launcher=local, gpu_points = all points, threads=1). Points still running at the limit
# are stopped (their records say so); then each recipe's figure, table and checks are drawn from what completed.
# mamba-ssm's CUDA extension is built in the background (nice) and sent back in <=15 MB parts for call 3.
# Results: $OUT/trainings.tgz (multirun records without checkpoints, figures, logs), mamba_built.tgz.part-*.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
LIMIT=${1:-470}; RECIPES=${RECIPES:-"mqar_vs_width attention_ratio niah_heatmap"}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/configs
(nice -n 19 bash .whl/build_mamba_ssm.sh > $R/build_mamba_ssm.log 2>&1; echo $? > /tmp/build.rc) &
(CONFIGS_LIMIT=$((LIMIT - 40)) OUT=$R/configs bash bench/device/19_configs_learn.sh > $R/configs/stdout.txt 2>&1) &
cfg=$!
total=0
for r in $RECIPES; do
  n=$(python3 -m hybrid.reproduce sweeps/$r.yaml profile=gpu --dry-run 2>/dev/null | sed -n 's/.*: \([0-9]*\) points in.*/\1/p')
  eval "n_$r=$n"; total=$((total + n))
done
el "$total points in $RECIPES"
for r in $RECIPES; do
  eval "n=\$n_$r"
  ( s=$(date +%s)
    timeout -k 15 $((LIMIT - 50)) python3 -m hybrid.reproduce sweeps/$r.yaml profile=gpu hydra/launcher=local \
      hydra.launcher.n_jobs=$n gpu_points=$total threads=1 > $R/$r.log 2>&1
    echo "exit $? after $(( $(date +%s) - s )) s" >> $R/$r.log ) &
done
sleep $((LIMIT - 45)); el "limit: stopping what still runs"
pkill -TERM -f "hybrid.train" ; sleep 8; pkill -KILL -f "hybrid.train"
wait $cfg
for r in $RECIPES; do
  python3 -m hybrid.reproduce sweeps/$r.yaml profile=gpu --figures-only >> $R/$r.log 2>&1
  echo "== $r"; grep -v "^\[" $R/$r.log | tail -16
done
echo "== configs"; cat $R/configs/19_configs_learn.txt
cp -r figures $R/ 2>/dev/null
find multirun \( -name record.json -o -name result.json -o -name config.yaml -o -name metrics.csv -o -name "summary*" \
  -o -name sweep.json -o -name train.log \) -print0 | tar czf $R/multirun.tgz --null -T -
tar czf "$OUT/trainings.tgz" -C $R --exclude=build_mamba_ssm.log . ; cp $R/build_mamba_ssm.log "$OUT/" 2>/dev/null
el "packed; mamba-ssm build rc $(cat /tmp/build.rc 2>/dev/null || echo 'not finished')"
if [ "$(cat /tmp/build.rc 2>/dev/null)" = 0 ]; then
  site=$(python3 -c "import torch, selective_scan_cuda, os; print(os.path.dirname(selective_scan_cuda.__file__))")
  (cd "$site" && tar czf /tmp/mamba_built.tgz selective_scan_cuda*.so mamba_ssm mamba_ssm-*.dist-info)
  split -b 15M /tmp/mamba_built.tgz "$OUT/mamba_built.tgz.part-"
fi
ls -la "$OUT"; el done
