#!/bin/bash
# Next session's device call A (coordinator), <= 570 s on a fresh H200; pack first (`bash bench/device/pack.sh`,
# then .whl/commit and .whl/dirty), carry [".whl"]. Call B (call_s7_B.sh) right after, on the warm machine.
#  0. issue 14: the SSD fix of session 6 (head_dim / N tiles >= 64, never run on a GPU) checked first and alone: the
#     S-block shape tests on the GPU, then 100 steps of `model=mamba2_small task=mqar` (the run that crashed) (<= 120 s)
#  1. issue 15: recipes' gpu profiles side by side (RECIPES; default mqar_vs_width, never run at this profile, and the
#     induction and NIAH profiles as bench/results/issue15_cpu_notes.md left them), detached: they go on into call B
#  2. issue 19 item 6: every model config on MQAR at its defaults plus megatron_ratio's remedies, beside them
#  3. mamba-ssm's CUDA extension built at nice 19, for call B's side-by-side benches
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
export RECIPES=${RECIPES:-"mqar_vs_width induction_extrapolation niah_heatmap"} N_MAX=${N_MAX:-18}  # every point at once (~1.3 GB host memory each)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
mkdir -p $OUT/i14
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_ssd.py -k "s_block or deterministic" \
  > $OUT/i14/s_block_tests.txt 2>&1; el "S-block tests on the GPU: exit $?"; tail -3 $OUT/i14/s_block_tests.txt
timeout 60 python3 -m hybrid.train model=mamba2_small task=mqar trainer.max_steps=100 trainer.val_check_interval=100 \
  trainer.enable_progress_bar=false run_dir=/tmp/mamba2_small_100 > $OUT/i14/mamba2_small_100.log 2>&1
el "mamba2_small 100 steps: exit $?"; grep -E "val/acc_L64|error" $OUT/i14/mamba2_small_100.log | tail -2
# 1-3: session 5's call B does them (recipes and configs detached, the build at nice 19, then packs what exists)
CONFIGS_SET=defaults CONFIGS_LIMIT=${CONFIGS_LIMIT:-420} B_S=$(( ${A_S:-540} - ($(date +%s) - T0) )) \
  bash bench/device/call_s5_B.sh
