#!/bin/bash
# Issue 15 (and 19's wall times) on one GPU, from the repo root with .whl carried: the gpu profiles of the six
# findings' recipes, all at once (each recipe's points side by side: hydra/launcher=local, n_jobs = its points,
# gpu_points = all recipes' points; threads=1), then their figures, tables and expectation checks. Resumable: a point killed mid-way
# continues from its last checkpoint when the same recipe command runs again on the same machine.
#   bash bench/device/15_gpu_profiles.sh start      launch every recipe detached (setsid), logs in /tmp/gp/
#   bash bench/device/15_gpu_profiles.sh wait S     until every recipe has ended or S seconds passed; progress lines
#   bash bench/device/15_gpu_profiles.sh stop       TERM then KILL what still runs (it resumes at the next start)
#   bash bench/device/15_gpu_profiles.sh figures    draws the recipes that were stopped, from their completed points
#   bash bench/device/15_gpu_profiles.sh pack DEST  records, tables, figures (no checkpoints) -> DEST.tgz + a summary
# A recipe's wall time (start to its figure) is in /tmp/gp/<recipe>.wall when it ended inside one launch.
RECIPES=${RECIPES:-"selective_copying induction_extrapolation mqar_vs_width attention_ratio niah_heatmap audio_selective_vs_lti"}
G=/tmp/gp; mkdir -p $G
points() { python3 -m hybrid.reproduce "sweeps/$1.yaml" profile=${PROFILE:-gpu} --dry-run 2>/dev/null | sed -n 's/.*: \([0-9]*\) points in.*/\1/p'; }
running() { pgrep -f "hybrid.reproduce sweeps/$1.yaml" > /dev/null; }
case $1 in
start)  # gpu_points: the GPU's slots are shared by every multirun on the machine (lock files), so all points' sum
  total=0; for r in $RECIPES; do n=$(points $r); total=$((total + ${n:-4})); done
  for r in $RECIPES; do
    running $r && { echo "$r already running"; continue; }
    n=$(points $r); n=${n:-4}; n=$(( n > ${N_MAX:-10} ? ${N_MAX:-10} : n ))  # host memory: ~1.3 GB a point
    echo "start $r: $n points at once"
    setsid nohup bash -c "s=\$(date +%s); python3 -m hybrid.reproduce sweeps/$r.yaml profile=${PROFILE:-gpu} hydra/launcher=local \
      hydra.launcher.n_jobs=$n gpu_points=$total threads=1 >> $G/$r.log 2>&1; rc=\$?; \
      echo \"exit \$rc after \$(( \$(date +%s) - s )) s\" >> $G/$r.wall" > /dev/null 2>&1 < /dev/null &
  done ;;
wait)
  end=$(( $(date +%s) + ${2:-300} ))
  while (( $(date +%s) < end )); do
    left=0; for r in $RECIPES; do running $r && left=$((left + 1)); done
    (( left == 0 )) && break
    sleep 30
    echo "[$(date +%H:%M:%S)] $left recipes running; points completed:" $(for r in $RECIPES; do
      echo -n "$r=$(grep -l '"status": "completed"' -r multirun/$r/${PROFILE:-gpu} --include=result.json 2>/dev/null | wc -l) "; done)
  done ;;
stop)
  pkill -TERM -f "hybrid.reproduce|hybrid.train" ; sleep 8; pkill -KILL -f "hybrid.reproduce|hybrid.train|loky"; true ;;
figures)  # after a stop: each recipe that did not end by itself drawn from the points that completed
  for r in $RECIPES; do
    grep -q "exit 0" $G/$r.wall 2>/dev/null || \
      timeout 40 python3 -m hybrid.reproduce sweeps/$r.yaml profile=${PROFILE:-gpu} --figures-only >> $G/$r.log 2>&1
  done ;;
pack)
  for r in $RECIPES; do echo "== $r"; cat $G/$r.wall 2>/dev/null; grep -v "^\[" $G/$r.log 2>/dev/null | grep -v -i warn | tail -14; done > $G/summary.txt
  find multirun figures \( -name record.json -o -name result.json -o -name config.yaml -o -name metrics.csv \
    -o -name "summary*" -o -name "*.png" -o -name "*.md" -o -name "*.csv" -o -name sweep.json \) -print0 2>/dev/null \
    | tar czf "$2.tgz" --null -T - $G/summary.txt $G/*.log $G/*.wall 2>/dev/null
  cat $G/summary.txt ;;
*) echo "usage: $0 start | wait S | stop | figures | pack DEST"; exit 2 ;;
esac
