#!/bin/bash
# Session 4, device call 1 (coordinator): the benches that need a quiet GPU or mamba-ssm, in ~560 s.
#   - mamba-ssm's CUDA extension built in the background (nice, ~3 min) while GPU-bound benches run;
#   - issue 12: bench/device/12_half_partials_probe.py (bf16 vs fp32 dB/dC partials, 1 vs 8 backward launches);
#   - issue 14: bench/device/14_ssd.sh without its tests (ours vs mamba-ssm's Triton SSD: semantics, S block vs
#     Mamba2, python -m hybrid.bench ssd --device cuda);
#   - issue 18 (after the build): python -m hybrid.bench generate --device cuda beside MambaLMHeadModel.generate(cg);
#   - issue 12: the scan at L = 64K, ours vs mamba-ssm, block layout.
# Everything lands in $OUT/results.tgz (re-packed after each step); the built mamba-ssm goes back in <=15 MB parts
# ($OUT/mamba_built.tgz.part-*) so a later call can carry it instead of building again.
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/i12 $R/i14 $R/i18
pack() { tar czf "$OUT/results.tgz" -C $R . ; }
(nice -n 19 bash .whl/build_mamba_ssm.sh > $R/build_mamba_ssm.log 2>&1; echo $? > /tmp/build.rc) &

timeout 95 python3 bench/device/12_half_partials_probe.py $R/i12/scan_half_partials.json > $R/i12/half_partials.log 2>&1
el "12 half partials"; tail -12 $R/i12/half_partials.log; pack

SSD_TESTS=0 OUT=$R/i14 timeout 220 bash bench/device/14_ssd.sh > $R/i14/stdout.txt 2>&1
el "14 ssd"; cat $R/i14/stdout.txt | tail -40; pack

while [ ! -f /tmp/build.rc ] && (( $(date +%s) - T0 < 330 )); do sleep 2; done
el "mamba-ssm build rc $(cat /tmp/build.rc 2>/dev/null || echo 'not finished')"
timeout 170 python3 -m hybrid.bench generate --device cuda --out $R/i18/generate_cuda.json > $R/i18/bench.log 2>&1
el "18 generate"; grep -v "^  " $R/i18/bench.log | tail -30; pack

left=$(( 570 - ($(date +%s) - T0) ))
if (( left > 20 )); then
  timeout $left python3 -m hybrid.bench scan --device cuda --lengths 65536 --layouts block contiguous \
    --providers ours mamba_ssm --out $R/i12/scan_cuda_64k.json > $R/i12/scan_64k.log 2>&1
  el "12 scan 64K"; tail -8 $R/i12/scan_64k.log
fi
pack
if [ "$(cat /tmp/build.rc 2>/dev/null)" = 0 ]; then
  site=$(python3 -c "import selective_scan_cuda, os; print(os.path.dirname(selective_scan_cuda.__file__))")
  (cd "$site" && tar czf /tmp/mamba_built.tgz selective_scan_cuda*.so mamba_ssm mamba_ssm-*.dist-info 2>/dev/null)
  split -b 15M /tmp/mamba_built.tgz "$OUT/mamba_built.tgz.part-"; ls -la "$OUT"
fi
el "done"
