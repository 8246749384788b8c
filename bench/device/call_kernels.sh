#!/bin/bash
# Session 4, device call 2 (coordinator), ~470 s, a quiet GPU (no mamba-ssm CUDA build: call 1 showed that a build
# beside Triton compiles starves them): issue 12's backward variants (bench/device/12_bwd_variants.sh, ~200 s;
# mamba-ssm's scan rows absent without the build) and issue 14's SSD check, S block vs Mamba2 and SSD bench
# (bench/device/14_ssd.sh without its tests, longer limits for mamba-ssm's autotuning). $OUT/results.tgz.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/i12 $R/i14
pack() { tar czf "$OUT/results.tgz" -C $R . ; }
OUT=$R/i12 timeout 215 bash bench/device/12_bwd_variants.sh > $R/i12/stdout.txt 2>&1
el "12 variants"; grep -v "WARNING: Target" $R/i12/stdout.txt | tail -40; pack
SSD_TESTS=0 CHECK_S=60 BLOCK_S=75 BENCH_S=$(( 455 - ($(date +%s) - T0) - 140 )) OUT=$R/i14 \
  timeout $(( 460 - ($(date +%s) - T0) )) bash bench/device/14_ssd.sh > $R/i14/stdout.txt 2>&1
el "14 ssd"; grep -v "WARNING: Target" $R/i14/stdout.txt | tail -45; pack
el done
