#!/bin/bash
# Session 8, device call A (<= 570 s, fresh H200; .whl carried, packed at a clean commit). Call B right after.
#  1. mamba-ssm's CUDA extension built in the background (for call B's SSD bench beside mamba_chunk_scan_combined)
#  2. issue 15/19/14: the gpu profiles of text_attention_ratio, induction_extrapolation and mamba2_mqar, every point
#     at once, detached (bench/device/15_gpu_profiles.sh start): they go on into call B (46 points)
#  3. issue 14: the SSD kernel tests and the fused gated RMSNorm's tests on the GPU (never run there)
# Results so far: $OUT/a_recipes.tgz, $OUT/gpu_tests.txt, progress printed.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
export RECIPES=${RECIPES:-"text_attention_ratio induction_extrapolation mamba2_mqar"} N_MAX=36
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pgrep -f build_mamba_ssm > /dev/null || [ -f /tmp/build.rc ] || setsid nohup bash -c "nice -n 5 bash .whl/build_mamba_ssm.sh \
  > /tmp/build_mamba_ssm.log 2>&1; echo \$? > /tmp/build.rc" > /dev/null 2>&1 < /dev/null &
bash bench/device/15_gpu_profiles.sh start
el "recipes started"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_ssd.py tests/kernels/test_ssd_gated_rmsnorm.py \
  > $OUT/gpu_tests.txt 2>&1; el "SSD + gated RMSNorm tests on the GPU: exit $?"; tail -4 $OUT/gpu_tests.txt
bash bench/device/15_gpu_profiles.sh wait $(( ${A_S:-530} - ($(date +%s) - T0) ))
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
uptime; free -g | head -2; el "build rc: $(cat /tmp/build.rc 2>/dev/null || echo running)"
bash bench/device/15_gpu_profiles.sh pack $OUT/a_recipes > /dev/null
for r in $RECIPES; do echo "$r: $(cat /tmp/gp/$r.wall 2>/dev/null)"; grep -h "step\b\|steps/s" /tmp/gp/$r.log 2>/dev/null | tail -2; done
el done
