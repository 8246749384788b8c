#!/bin/bash
# Next session's device call B (coordinator), <= 580 s, right after call_s7_A.sh on the same warm machine:
#  1. the recipes to their end or TRAIN_S s, then stopped, drawn from what completed, packed (issue 15)
#  2. quiet GPU, each step under its own limit:
#     - issue 12: our scan beside mamba-ssm's in one run, block layout and contiguous, and the model bench with both
#       scans (MFMFMFAF on mamba-ssm's scan too) beside MambaLMHeadModel (bench/device/12_final.sh, no variants)
#     - issue 19 item 2: the 12-point sweep at k=1 and k=12 on this one device (19_throughput.sh, PARTS=none)
#     - issue 14: the S block beside mamba-ssm's Mamba2 and the per-kernel stages (cut at 40 s in session 6)
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
export RECIPES=${RECIPES:-"mqar_vs_width induction_extrapolation niah_heatmap"} N_MAX=${N_MAX:-18}  # every point at once (~1.3 GB host memory each)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( ${END_S:-570} - ($(date +%s) - T0) )); }
R=/tmp/results; mkdir -p $R/i12 $R/i19 $R/i14
bash bench/device/15_gpu_profiles.sh start   # no-op for a recipe still running from call A
bash bench/device/15_gpu_profiles.sh wait $(( ${TRAIN_S:-200} - ($(date +%s) - T0) ))
bash bench/device/15_gpu_profiles.sh stop
bash bench/device/15_gpu_profiles.sh figures
bash bench/device/15_gpu_profiles.sh pack $OUT/b_recipes | grep -E "^==|PASS|FAIL|NOT CHECKED|exit|completed in"
tar czf $OUT/b_configs.tgz -C $R configs 2>/dev/null; tail -14 $R/configs/19_configs_learn.txt 2>/dev/null
el "recipes packed; build rc $(cat /tmp/build.rc 2>/dev/null || echo 'absent or running')"
OUT=$R/i12 END_S=0 timeout $(( $(left) > 240 ? 225 : $(left) - 20 )) bash bench/device/12_final.sh > $R/i12/stdout.txt 2>&1
el "12 final"; grep -v "WARNING: Target" $R/i12/stdout.txt | tail -24
if (( $(left) > 150 )); then
  PARTS=none SWEEP_KS="1 12" OUT=$R/i19 timeout 140 bash bench/device/19_throughput.sh > $R/i19/stdout.txt 2>&1
  el "19 sweep"; cat $R/i19/19_sweep.txt
fi
if (( $(left) > 40 )); then
  timeout $(( $(left) - 15 )) python3 -m hybrid.bench ssd --device cuda --ssd-only --providers ours:triton mamba_ssm \
    --lengths 1024 --block --stages 16384 --out $R/i14/ssd_stages_block.json > $R/i14/bench.log 2>&1
  el "ssd block/stages exit $?"; grep -v "^  L=\|^  block \|Warning\|warn\|^wrote" $R/i14/bench.log | tail -24
fi
tar czf $OUT/b_benches.tgz -C $R i12 i19 i14
el done
