#!/bin/bash
# session 2, device call 2: v3 kernels compiled: tests, sweep (v3 tiles + v2), checks, mamba-ssm, bench 1K-64K.
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
ln -sfn ../kernels hybrid/kernels; ln -sfn ../tasks hybrid/tasks
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( ${BUDGET:-540} - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/env.log
(bash .whl/build_mamba_ssm.sh > $OUT/mamba_build.log 2>&1; echo "exit $?" >> $OUT/mamba_build.log) &
el "pytest"
timeout 120 python3 -m pytest tests/kernels -q -ra -p no:cacheprovider -n 8 > $OUT/pytest.log 2>&1; echo "pytest exit $?" >> $OUT/pytest.log
tail -6 $OUT/pytest.log
el "sweep"
timeout 200 python3 -m hybrid.bench scan_gpu_check --phases sweep --workers 14 --old .whl/old/scan_v2.py --out $OUT > $OUT/sweep.log 2>&1
grep -v "^  " $OUT/sweep.log | tail -30
cp $OUT/scan_gpu_check.json $OUT/sweep.json
el "check"
timeout 100 python3 -m hybrid.bench scan_gpu_check --phases check --out $OUT > $OUT/check.log 2>&1
grep "^check" $OUT/check.log | cut -c1-120 | head -8
el "wait mamba build"
for i in $(seq 60); do grep -q "^exit" $OUT/mamba_build.log && break; sleep 2; done
tail -2 $OUT/mamba_build.log
timeout 50 python3 -m hybrid.bench scan_gpu_check --phases mamba --out $OUT >> $OUT/check.log 2>&1
grep "^mamba" $OUT/check.log | head -4
el "bench"
CFG=$(python3 -c "import json; print(json.dumps(json.load(open('$OUT/sweep.json')).get('best_config', {})))" 2>/dev/null || echo '{}')
echo "config $CFG"
timeout $(left) python3 -m hybrid.bench scan --device cuda --config "$CFG" --out $OUT/scan_cuda.json > $OUT/bench.log 2>&1
grep -v "^  L=" $OUT/bench.log | tail -45
el "end"
