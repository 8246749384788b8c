#!/bin/bash
# Next session's device call A (<= 570 s, fresh H200; pack first, then .whl/commit and .whl/dirty; carry [".whl"]).
#  1. issue 14, on a quiet GPU: our Triton SSD and dt_decays tests on the GPU (session 8's kernel change never ran
#     its tests there), then bench/device/14_ssd_final.sh (checks, the whole SSD bench, per-kernel times at 16K, the
#     S block vs Mamba2 with the fused norm now the default) -> $OUT/ssd/
#  2. the gpu profiles of mamba2_mqar (vocabulary 64 now), text_attention_ratio and induction_extrapolation, detached,
#     only after 1, at most 12 points of a recipe at once (the host has 16 cores: 46 points ran at ~3 steps/s each in
#     session 8; call_s8_B.sh must then get the same N_MAX=12): they go on into
#     call B (`bash bench/device/call_s8_B.sh`, then `FINAL=1 B_S=... bash bench/device/call_s8_B.sh`).
# In device commands, pgrep/pkill patterns must not match the command itself: `[h]ybrid[.]train`, not hybrid.train.
source .whl/setup_project.sh > /dev/null || exit 1
export RECIPES=${RECIPES:-"mamba2_mqar text_attention_ratio induction_extrapolation"} N_MAX=${N_MAX:-12}  # 22 points: 16 cores
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p $OUT/ssd
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_ssd.py tests/kernels/test_ssd_dt_decays.py \
  tests/kernels/test_ssd_gated_rmsnorm.py > $OUT/ssd/gpu_tests.txt 2>&1; el "SSD tests on the GPU: exit $?"
tail -3 $OUT/ssd/gpu_tests.txt
CHECK_S=60 BENCH_S=120 STAGES_S=90 TESTS_S=5 OUT=$OUT/ssd bash bench/device/14_ssd_final.sh 2>&1 | grep -v WARNING | tail -40
el "SSD measured"
bash bench/device/15_gpu_profiles.sh start
bash bench/device/15_gpu_profiles.sh wait $(( ${A_S:-540} - ($(date +%s) - T0) ))
bash bench/device/15_gpu_profiles.sh pack $OUT/a_recipes > /dev/null
el done
