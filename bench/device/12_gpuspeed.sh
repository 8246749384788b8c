#!/bin/bash
# Issue 12 device call (GPUSPEED): compiled tests of the new kernels, a tile sweep, the scan bench (ours and mamba-ssm
# on contiguous and block-layout inputs) and the model bench (train tokens/s, blocks) beside mamba-ssm, one process
# each. Run from the repo root with .whl carried: `bash bench/device/12_gpuspeed.sh`; writes under $OUT (<= 8 files).
source .whl/setup_project.sh || exit 1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
(bash .whl/build_mamba_ssm.sh > $OUT/mamba_build.log 2>&1; echo "exit $?" >> $OUT/mamba_build.log) &
el "pytest (compiled)"
timeout 110 python3 -m pytest -q -p no:cacheprovider -n 4 tests/kernels/test_causal_conv1d.py \
  tests/kernels/test_mamba_block_backends.py tests/test_moe_grouped.py tests/kernels/test_triton_scan.py \
  > $OUT/pytest.log 2>&1; echo "pytest exit $?" >> $OUT/pytest.log
tail -3 $OUT/pytest.log
el "sweep"
timeout 120 python3 -m hybrid.bench scan_gpu_check --phases sweep --small --workers 8 --out $OUT > $OUT/sweep.log 2>&1
grep "^sweep" $OUT/sweep.log | head -16
CFG=$(python3 -c "import json; print(json.dumps(json.load(open('$OUT/scan_gpu_check.json'))['best_config']))" \
  2>>$OUT/sweep.log || echo '{}')
echo "config $CFG" | tee -a $OUT/sweep.log
el "wait for mamba-ssm"
for i in $(seq 90); do grep -q "^exit" $OUT/mamba_build.log && break; sleep 2; done
tail -2 $OUT/mamba_build.log
el "scan bench"
timeout 120 python3 -m hybrid.bench scan --device cuda --config "$CFG" --out $OUT/scan_cuda.json > $OUT/scan.log 2>&1
grep -E "ours|mamba_ssm|floor" $OUT/scan.log | grep -v "^  L=" | head -40
el "model bench"
timeout $(( 570 - ($(date +%s) - T0) )) python3 -m hybrid.bench model --device cuda --config "$CFG" \
  --out $OUT/model_cuda.json > $OUT/model.log 2>&1
tail -28 $OUT/model.log
el "end"
