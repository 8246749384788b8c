#!/bin/bash
# Session 5, device call A (coordinator), <= 560 s, a quiet GPU (no mamba-ssm build):
#  1. issue 12: the scan backward variants, incl. the never-run inline-PTX ones (bench/device/12_bwd_variants.sh);
#  2. issue 19 items 1-2: hybrid.train vs the bare loop, the 12-point sweep at k = 1 / 4 / 12 (19_throughput.sh);
#  3. issue 12 item 6 baseline: the GPU demo from a cold Triton cache vs the fp32 reference-scan demo (wall times).
# Results: $OUT/results.tgz (every step's files and stdout), the tables printed.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/i12 $R/i19 $R/demo
pack() { tar czf "$OUT/results.tgz" -C $R . ; }
OUT=$R/i12 timeout 215 bash bench/device/12_bwd_variants.sh > $R/i12/stdout.txt 2>&1
el "12 variants"; grep -v "WARNING: Target" $R/i12/stdout.txt | tail -30; pack
OUT=$R/i19 timeout 275 bash bench/device/19_throughput.sh > $R/i19/stdout.txt 2>&1
el "19 throughput"; tail -25 $R/i19/stdout.txt; pack
demo() {  # demo NAME OVERRIDES...: wall time of `hybrid.train experiment=demo` from a cold Triton cache
  local name=$1 s; shift; s=$(date +%s.%N)
  TRITON_CACHE_DIR=$(mktemp -d) timeout 90 python3 -m hybrid.train experiment=demo "run_dir=$R/demo/$name" \
    trainer.enable_progress_bar=false "$@" > $R/demo/$name.log 2>&1
  echo "demo $name exit $? wall $(python3 -c "import time; print(f'{time.time() - $s:.1f}')") s"
}
if (( $(date +%s) - T0 < 400 )); then
  { demo triton_bf16; demo reference_fp32 model.blocks.M.scan_backend=reference trainer.precision=32-true; } \
    | tee $R/demo/wall.txt
  grep -h -i -E "accuracy|error" $R/demo/*.log | tail -6
fi
pack; el done
