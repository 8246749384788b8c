#!/bin/bash
# Session 8, device call A (<= 570 s, fresh H200; .whl carried, packed at a clean commit). Call B right after.
#  1. issue 14, on a quiet GPU first: bench/device/14_ssd_final.sh with the LAUNCH settings of session 7 (checks,
#     the whole SSD bench 1K-64K beside mamba-ssm's Triton SSD from its source, per-kernel times at 16K, the S
#     block vs Mamba2, Triton SSD tests on the GPU) -> $OUT/ssd/
#  2. issue 15/19/14: the gpu profiles of text_attention_ratio, induction_extrapolation and mamba2_mqar, every point
#     at once, detached (bench/device/15_gpu_profiles.sh start): they go on into call B (46 points)
#  2b. issue 15: selective copying's ungated S6 point for 24000 steps (it stopped rising at 0.81 by 8000?), detached
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
# issue 15, selective copying's failed expectation: the ungated S6 (0.807 at 8000 steps, still rising) run for longer,
# the gpu profile's point otherwise; evaluated every 2000 steps, cut by call C wherever it is
pgrep -f sc_nogate_long > /dev/null || setsid nohup python3 -m hybrid.train task=selective_copying model=mamba_small \
  model.layout.pattern=MM model.blocks.M.dt_bc_norm=false trainer.enable_progress_bar=false model.d_model=64 \
  data.batch_size=64 data.eval_batches=8 task.num_data_tokens=16 task.train_length=256 'task.eval_lengths=[256,512]' \
  trainer.max_steps=24000 trainer.val_check_interval=2000 checkpoint_every=2000 lit.optimizer.lr=1e-3 \
  model.blocks.M.selective=true model.blocks.M.gate=false seed=0 threads=1 run_dir=multirun/extra/sc_nogate_long \
  > /tmp/gp/sc_nogate_long.log 2>&1 < /dev/null &
el "recipes started"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_ssd_gated_rmsnorm.py tests/kernels/test_ssd_dt_decays.py \
  > $OUT/norm_tests.txt 2>&1; el "gated RMSNorm + dt decays tests on the GPU: exit $?"; tail -2 $OUT/norm_tests.txt
bash bench/device/15_gpu_profiles.sh wait $(( ${A_S:-540} - ($(date +%s) - T0) ))
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
uptime; free -g | head -2
bash bench/device/15_gpu_profiles.sh pack $OUT/a_recipes > /dev/null
for r in $RECIPES; do echo "$r: $(cat /tmp/gp/$r.wall 2>/dev/null)"; done
el done
