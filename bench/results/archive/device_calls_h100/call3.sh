#!/bin/bash
# session 2, device call 3: v3 with independent per-state scans: sweep (+v2), bench 1K-64K, mamba-ssm, checks, tests.
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
ln -sfn ../kernels hybrid/kernels; ln -sfn ../tasks hybrid/tasks
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( 550 - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/env.log
(bash .whl/build_mamba_ssm.sh > $OUT/mamba_build.log 2>&1; echo "exit $?" >> $OUT/mamba_build.log) &
el "sweep"
timeout 150 python3 -m hybrid.bench scan_gpu_check --phases sweep --small --workers 14 --old .whl/old/scan_v2.py --out $OUT > $OUT/sweep.log 2>&1
grep -v "^  " $OUT/sweep.log | grep -v "^summary" | head -24
cp $OUT/scan_gpu_check.json $OUT/sweep.json
el "wait mamba build"
for i in $(seq 60); do grep -q "^exit" $OUT/mamba_build.log && break; sleep 2; done
tail -1 $OUT/mamba_build.log
el "bench"
CFG=$(python3 -c "import json; print(json.dumps(json.load(open('$OUT/sweep.json')).get('best_config', {})))" 2>/dev/null || echo '{}')
echo "config $CFG"
timeout 170 python3 -m hybrid.bench scan --device cuda --config "$CFG" --out $OUT/scan_cuda.json > $OUT/bench.log 2>&1
grep -v "^  L=" $OUT/bench.log | grep -v "reference\|sequential" | tail -40
el "mamba+check"
timeout 40 python3 -m hybrid.bench scan_gpu_check --phases mamba --out $OUT > $OUT/check.log 2>&1
timeout 100 python3 -m hybrid.bench scan_gpu_check --phases check --out $OUT >> $OUT/check.log 2>&1
grep "^mamba\|^check" $OUT/check.log | cut -c1-110 | head -12
el "pytest"
timeout $(left) python3 -m pytest tests/kernels -q -ra -p no:cacheprovider -n 8 > $OUT/pytest.log 2>&1; echo "pytest exit $?" >> $OUT/pytest.log
tail -4 $OUT/pytest.log
el "end"
