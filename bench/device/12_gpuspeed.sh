#!/bin/bash
# Issue 12 device call 2 (GPUSPEED): compiled scan tests, the backward-segments probe, and the scan bench of ours
# (contiguous and block-layout inputs, L 1K..64K, time and peak memory). Call 1 (this script at commit a3729cb: tests,
# scan bench beside mamba-ssm, model bench beside mamba-ssm) gave bench/results/model_cuda.json and scan_h200_call1.log.
# Run from the repo root with .whl carried: `bash bench/device/12_gpuspeed.sh`; writes under $OUT.
source .whl/setup_project.sh || exit 1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
el "pytest (compiled)"
timeout 55 python3 -m pytest -q -p no:cacheprovider -n 8 tests/kernels/test_triton_scan.py \
  tests/kernels/test_causal_conv1d.py tests/test_moe_grouped.py > $OUT/pytest.log 2>&1
echo "pytest exit $?" >> $OUT/pytest.log; tail -4 $OUT/pytest.log
el "segments probe"
timeout 80 python3 bench/device/12_segments_probe.py $OUT/segments.json 2>&1 | tee $OUT/segments.log
el "scan bench"
timeout 70 python3 -m hybrid.bench scan --device cuda --providers ours --out $OUT/scan_cuda.json > $OUT/scan.log 2>&1
grep -v "^  L=" $OUT/scan.log | grep -v floor | tail -20
el "end"
