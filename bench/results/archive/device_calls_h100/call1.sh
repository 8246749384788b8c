#!/bin/bash
# session 2, device call 1: compiled kernel tests, large-L checks, small sweep, mamba-ssm comparison, bench 1K/4K.
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
ln -sfn ../kernels hybrid/kernels; ln -sfn ../tasks hybrid/tasks
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/env.log
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $OUT/env.log
(bash .whl/build_mamba_ssm.sh > $OUT/mamba_build.log 2>&1; echo "exit $?" >> $OUT/mamba_build.log) &
el "pytest"
timeout ${T_TEST:-150} python3 -m pytest tests/kernels -q -ra -p no:cacheprovider -n 4 > $OUT/pytest.log 2>&1; echo "pytest exit $?" >> $OUT/pytest.log
tail -15 $OUT/pytest.log
el "check+sweep"
timeout ${T_SWEEP:-200} python3 -m hybrid.bench scan_gpu_check --phases ${PHASES:-check,sweep} --small --out $OUT > $OUT/check.log 2>&1
grep -v "^  " $OUT/check.log | tail -60
el "wait mamba build"
for i in $(seq 90); do grep -q "^exit" $OUT/mamba_build.log && break; sleep 2; done
tail -3 $OUT/mamba_build.log
cp $OUT/scan_gpu_check.json $OUT/scan_gpu_check_sweep.json 2>/dev/null
timeout 60 python3 -m hybrid.bench scan_gpu_check --phases mamba --out $OUT >> $OUT/check.log 2>&1
grep -A12 "^mamba" $OUT/check.log
el "bench"
timeout ${T_BENCH:-100} python3 -m hybrid.bench scan --device cuda --lengths 1024 4096 --out $OUT/scan_cuda.json > $OUT/bench.log 2>&1
grep -v "^  L=" $OUT/bench.log | tail -40
el "end"
