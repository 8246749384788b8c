#!/bin/bash
# Session 5, device call C (coordinator), <= 580 s, right after call B on the same warm machine:
#  1. the recipes: go on (or resume) until they end or TRAIN_S seconds; then stopped, figures drawn, packed;
#  2. quiet GPU: issue 12's final benches beside mamba-ssm (bench/device/12_final.sh), issue 19's throughput after
#     the logging change (default vs deterministic=false, the sync census, the 12-point sweep at k=12), and
#     issue 14's SSD bench while time is left (bench/device/14_ssd_final.sh).
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/i12 $R/i19 $R/i14
el "build rc: $(cat /tmp/build.rc 2>/dev/null || echo 'absent or running')"
bash bench/device/15_gpu_profiles.sh start   # no-op for a recipe still running from call B
bash bench/device/15_gpu_profiles.sh wait $(( ${TRAIN_S:-300} - ($(date +%s) - T0) ))
bash bench/device/15_gpu_profiles.sh stop
bash bench/device/15_gpu_profiles.sh figures
bash bench/device/15_gpu_profiles.sh pack $OUT/c_recipes | tail -60
tar czf $OUT/c_configs.tgz -C $R configs 2>/dev/null
el "recipes packed"
left() { echo $(( ${END_S:-570} - ($(date +%s) - T0) )); }
if (( $(left) > 120 )) && [ -f bench/device/12_final.sh ]; then
  OUT=$R/i12 timeout $(( $(left) > 230 ? 200 : $(left) - 30 )) bash bench/device/12_final.sh > $R/i12/stdout.txt 2>&1
  el "12 final"; grep -v "WARNING: Target" $R/i12/stdout.txt | tail -30
fi
if (( $(left) > 70 )); then
  PARTS="bare syncs train" VARIANTS="default,not deterministic" SWEEP_KS="12" THROUGHPUT_S=$(( $(left) > 150 ? 110 : $(left) - 40 )) \
    OUT=$R/i19 timeout $(( $(left) - 10 )) bash bench/device/19_throughput.sh > $R/i19/stdout.txt 2>&1
  el "19 throughput"; tail -16 $R/i19/stdout.txt
fi
if (( $(left) > 60 )) && [ -f bench/device/14_ssd_final.sh ]; then
  OUT=$R/i14 timeout $(( $(left) - 10 )) bash bench/device/14_ssd_final.sh > $R/i14/stdout.txt 2>&1
  el "14 ssd"; grep -v "WARNING: Target" $R/i14/stdout.txt | tail -20
fi
tar czf $OUT/c_benches.tgz -C $R i12 i19 i14
el done
