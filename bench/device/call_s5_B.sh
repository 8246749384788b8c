#!/bin/bash
# Device call B of session 5 (coordinator), <= 570 s, the first of two back-to-back calls on one warm machine (also
# the body of call_s7_A.sh after its SSD check; RECIPES, CONFIGS_SET, CONFIGS_LIMIT and B_S from the environment):
#  - issue 15: the six findings' gpu profiles, every point at once, detached (bench/device/15_gpu_profiles.sh start);
#    they go on into call C if the machine keeps them (else call C resumes them from their checkpoints);
#  - issue 19 item 6: every model config on MQAR (bench/device/19_configs_learn.sh), beside them;
#  - mamba-ssm's CUDA extension built in the background (nice 19) for call C's side-by-side benches.
# Results so far: $OUT/b_*.tgz and the progress printed.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/configs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# on a machine still warm from an earlier call, what it started goes on: not started twice
pgrep -f build_mamba_ssm > /dev/null || [ -f /tmp/build.rc ] || setsid nohup bash -c "nice -n 19 bash .whl/build_mamba_ssm.sh > $R/build_mamba_ssm.log 2>&1; echo \$? > /tmp/build.rc" \
  > /dev/null 2>&1 < /dev/null &
bash bench/device/15_gpu_profiles.sh start
el "recipes started"
pgrep -f 19_configs_learn > /dev/null || [ -f $R/configs/done ] || setsid nohup bash -c "CONFIGS_LIMIT=${CONFIGS_LIMIT:-500} OUT=$R/configs bash bench/device/19_configs_learn.sh \
  > $R/configs/stdout.txt 2>&1; echo done > $R/configs/done" > /dev/null 2>&1 < /dev/null &
bash bench/device/15_gpu_profiles.sh wait $(( ${B_S:-535} - ($(date +%s) - T0) ))
el "packing what exists so far"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
uptime; echo "build rc: $(cat /tmp/build.rc 2>/dev/null || echo running)"
bash bench/device/15_gpu_profiles.sh pack $OUT/b_recipes > /dev/null
tar czf $OUT/b_configs.tgz -C $R configs build_mamba_ssm.log 2>/dev/null
tail -5 $R/configs/stdout.txt
el done
