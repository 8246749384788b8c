#!/bin/bash
# Session 8, device calls B and C on the warm machine of call A: the recipes it started go on.
#   bash bench/device/call_s8_B.sh            wait up to B_S s (default 550) for them, then pack what exists
#   FINAL=1 bash bench/device/call_s8_B.sh    the same, then stop what still runs and draw the stopped recipes'
#                                             figures from their completed points, pack
# If the machine is fresh (call A's processes gone), the recipes resume from their last checkpoints: none here on
# a fresh machine, so they start over. Results: $OUT/<b|c>_recipes.tgz with /tmp/gp/summary.txt printed.
source .whl/setup_project.sh > /dev/null || exit 1
export RECIPES=${RECIPES:-"text_attention_ratio induction_extrapolation mamba2_mqar"} N_MAX=${N_MAX:-12}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pgrep -f "hybrid.reproduce" > /dev/null || { el "no recipe running: (re)starting"; bash bench/device/15_gpu_profiles.sh start; }
bash bench/device/15_gpu_profiles.sh wait $(( ${B_S:-550} - ${FINAL:-0} * 60 - ($(date +%s) - T0) ))
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime
tag=b
if [ -n "$FINAL" ]; then
  tag=c; bash bench/device/15_gpu_profiles.sh stop; el stopped; bash bench/device/15_gpu_profiles.sh figures; el figures
fi
bash bench/device/15_gpu_profiles.sh pack $OUT/${tag}_recipes
for r in $RECIPES; do echo "$r: $(cat /tmp/gp/$r.wall 2>/dev/null)"; done
el done
