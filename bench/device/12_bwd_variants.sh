#!/bin/bash
# Issue 12: our scan's backward variants (bench/device/12_bwd_variants_probe.py's list; CONFIG keys: the kernel,
# its unroll, prefetch, inline PTX, register cap, 16-bit partials, launches) against the default and mamba-ssm's scan,
# side by side in one process: fwd+bwd ms and peak MiB at L = 1K, 4K, 16K (64K while the budget lasts), batch 8,
# dim 2048, N 16, bf16, the block's layout; each variant's gradients checked against the fp32 reference on the GPU
# first (a variant that fails is not timed). Run from the repo root with .whl carried (mamba-ssm built before it, if
# at all: its import is guarded). ~190 s: the variants compile in parallel processes first (Triton's disk cache),
# then one process times them. Writes $OUT/scan_bwd_variants.json (rows) and $OUT/scan_bwd_variants.log; the fastest
# checked variant's config goes to /tmp/scan_bwd_best.json (for a later step, e.g. the model bench's --config);
# prints the table last.
source .whl/setup_project.sh || exit 1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
P=bench/device/12_bwd_variants_probe.py
el "compile the variants (parallel)"
# one process a variant (16, on 16 cores), each under its own timeout, so none outlives this step
python3 $P --list | OMP_NUM_THREADS=1 xargs -P 16 -I{} timeout 75 python3 $P --warm {} > /tmp/warm.log 2>&1
echo "warm-up exit $?"; grep -i -E "error|Traceback" /tmp/warm.log | head -5
el "time the variants"
timeout 95 python3 $P $OUT/scan_bwd_variants.json --budget-s 75 > $OUT/scan_bwd_variants.log 2>&1
echo "probe exit $?"
grep -E "^check|^best|mamba_ssm:|failed" $OUT/scan_bwd_variants.log
python3 $P $OUT/scan_bwd_variants.json --table  # from the rows written so far, also after a timeout
el "end"
