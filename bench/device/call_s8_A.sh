#!/bin/bash
# Session 8, device call A (<= 570 s, fresh H200; .whl carried, packed at a clean commit). Call B right after.
#  1. issue 14, on a quiet GPU first: bench/device/14_ssd_final.sh with the LAUNCH settings of session 7 (checks,
#     the whole SSD bench 1K-64K beside mamba-ssm's Triton SSD from its source, per-kernel times at 16K, the S
#     block vs Mamba2, Triton SSD tests on the GPU) -> $OUT/ssd/
#  2. issue 15/19/14: the gpu profiles of text_attention_ratio, induction_extrapolation and mamba2_mqar, every point
#     at once, detached (bench/device/15_gpu_profiles.sh start): they go on into call B (46 points)
#  3. the fused gated RMSNorm and dt_decays tests on the GPU, beside them
# Results so far: $OUT/ssd/, $OUT/a_recipes.tgz, $OUT/norm_tests.txt, progress printed.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
export RECIPES=${RECIPES:-"text_attention_ratio induction_extrapolation mamba2_mqar"} N_MAX=36
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p $OUT/ssd
CHECK_S=60 BENCH_S=120 STAGES_S=60 TESTS_S=40 OUT=$OUT/ssd bash bench/device/14_ssd_final.sh
el "SSD measured"
bash bench/device/15_gpu_profiles.sh start
el "recipes started"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_ssd_gated_rmsnorm.py tests/kernels/test_ssd_dt_decays.py \
  > $OUT/norm_tests.txt 2>&1; el "gated RMSNorm + dt decays tests on the GPU: exit $?"; tail -2 $OUT/norm_tests.txt
bash bench/device/15_gpu_profiles.sh wait $(( ${A_S:-540} - ($(date +%s) - T0) ))
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
uptime; free -g | head -2
bash bench/device/15_gpu_profiles.sh pack $OUT/a_recipes > /dev/null
for r in $RECIPES; do echo "$r: $(cat /tmp/gp/$r.wall 2>/dev/null)"; done
el done
