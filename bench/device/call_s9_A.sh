#!/bin/bash
# Session 9, device call A (<= 570 s, fresh H200; pack first, then .whl/commit and .whl/dirty; carry [".whl"]).
#  1. issue 14, on a quiet GPU: the bitwise check and fused-norm check, then per-kernel times at 16K and the S block
#     vs mamba-ssm's Mamba2 with dt_decays.py and the fused norm as defaults (14_ssd_final.sh without its whole-bench
#     step: session 8 measured that, bench/results/ssd_cuda_h200_s8.json) -> $OUT/ssd/
#  2. the gpu profiles of mamba2_mqar, text_attention_ratio and induction_extrapolation started detached (at most
#     N_MAX points of a recipe at once: the host has 16 cores), and beside them, the Triton SSD, dt_decays and
#     gated-norm tests on the GPU (correctness only, so a busy GPU does not matter; session 8's fixed kernel has not
#     run its tests there) -> $OUT/ssd/gpu_tests.txt. The recipes go on into call B (`bash bench/device/call_s8_B.sh`,
#     then `FINAL=1 B_S=... bash bench/device/call_s8_B.sh`).
# In device commands, pgrep/pkill patterns must not match the command itself: `[h]ybrid[.]train`, not hybrid.train.
source .whl/setup_project.sh > /dev/null || exit 1
export RECIPES=${RECIPES:-"mamba2_mqar text_attention_ratio induction_extrapolation"} N_MAX=${N_MAX:-12}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p $OUT/ssd
CHECK_S=60 BENCH_S=0 STAGES_S=90 TESTS_S=0 OUT=$OUT/ssd bash bench/device/14_ssd_final.sh 2>&1 | grep -v WARNING | tail -40
el "SSD measured"
bash bench/device/15_gpu_profiles.sh start
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_ssd.py tests/kernels/test_ssd_dt_decays.py \
  tests/kernels/test_ssd_gated_rmsnorm.py > $OUT/ssd/gpu_tests.txt 2>&1; el "SSD tests on the GPU: exit $?"
tail -3 $OUT/ssd/gpu_tests.txt
bash bench/device/15_gpu_profiles.sh wait $(( ${A_S:-545} - ($(date +%s) - T0) ))
bash bench/device/15_gpu_profiles.sh pack $OUT/a_recipes > /dev/null
el done
