#!/bin/bash
# Session 5, device call D (coordinator), <= 420 s, quiet GPU, no mamba-ssm build: the new scan defaults' GPU check
# and timings (bench/device/12_final.sh: ours only here) and the restructured SSD's check and bench
# (bench/device/14_ssd_final.sh, mamba-ssm's pure-Triton SSD from .whl/src where importable). $OUT/d.tgz.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/i12 $R/i14
OUT=$R/i12 timeout 215 bash bench/device/12_final.sh > $R/i12/stdout.txt 2>&1
el "12 final"; grep -v "WARNING: Target" $R/i12/stdout.txt | tail -30
tar czf $OUT/d.tgz -C $R i12
OUT=$R/i14 timeout 180 bash bench/device/14_ssd_final.sh > $R/i14/stdout.txt 2>&1
el "14 ssd"; grep -v "WARNING: Target" $R/i14/stdout.txt | tail -30
tar czf $OUT/d.tgz -C $R i12 i14
el done
