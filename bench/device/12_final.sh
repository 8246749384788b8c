#!/bin/bash
# Issue 12, session 5's late device call (~200 s, at most ~215; run after `bash .whl/build_mamba_ssm.sh`, whose
# import is guarded: without it, ours only), each step one process under its own timeout:
#   0. the default's gradients checked against the fp32 reference on the GPU, bitwise repeatable (<= 45 s)
#   1. python -m hybrid.bench scan: our scan (CONFIG's default) vs mamba-ssm's, block layout and contiguous, fwd and
#      fwd+bwd, batch 8, dim 2048, N 16, bf16, L 1K, 4K, 16K, 64K (rows saved after each L: a timeout keeps the
#      shorter ones)                                                                                        (<= 90 s)
#   2. python -m hybrid.bench model --stacks mamba jamba --blocks M: training tokens/s and peak memory of the pure
#      Mamba LM and MFMFMFAF x3 on our scan and on mamba-ssm's, and mamba-ssm's MambaLMHeadModel (batch 8 x 2048,
#      d_model 1024, 24 sublayers, bf16 autocast, fused AdamW); the M block fwd and fwd+bwd on each scan beside
#      mamba-ssm's `Mamba` module (d_model 1024, batch 8, L 2048)                                          (<= 80 s)
#   3. while END_S (default 200) s allow: bench/device/12_bwd_variants_probe.py, the default beside session 4's kernel
#      options and the launch counts (seg1, seg8, fp32 partials), gradients checked on the GPU first, L 1K-16K
# Writes $OUT/12_scan.json, 12_scan.log, 12_model.json, 12_model.log, 12_variants.json, 12_variants.log; prints a
# short table last (bench/device/12_final_table.py).
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
if python3 -c "import torch, selective_scan_cuda; from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel" > /dev/null 2>&1; then
  SCAN_P="ours mamba_ssm"; MODEL_B="triton mamba_ssm"; el "mamba-ssm imports: side by side"
else
  SCAN_P="ours"; MODEL_B="triton"; el "mamba-ssm does NOT import: ours only (run bash .whl/build_mamba_ssm.sh first)"
fi
# 0. the default's gradients against the fp32 reference on this GPU, and bitwise repeatable (the probe's check only)
timeout -k 5 45 python3 bench/device/12_bwd_variants_probe.py /tmp/12_check.json --variants default --budget-s 0 \
  2>&1 | grep -E "^check|Error"
el "check"
timeout -k 5 90 python3 -m hybrid.bench scan --device cuda --layouts block contiguous --providers $SCAN_P \
  --out $OUT/12_scan.json > $OUT/12_scan.log 2>&1
el "scan bench exit $?"
timeout -k 5 80 python3 -m hybrid.bench model --device cuda --stacks mamba jamba --blocks M --backends $MODEL_B \
  --out $OUT/12_model.json > $OUT/12_model.log 2>&1
el "model bench exit $?"
left=$(( ${END_S:-200} - ($(date +%s) - T0) ))
if (( left >= 40 )); then
  timeout -k 5 $((left - 5)) python3 bench/device/12_bwd_variants_probe.py $OUT/12_variants.json \
    --budget-s $((left - 25)) --variants default s4_default seg1 seg8 fp32_partials --lengths 1024 4096 16384 \
    > $OUT/12_variants.log 2>&1
  el "variants exit $?"; grep -E "^check|failed" $OUT/12_variants.log
  python3 bench/device/12_bwd_variants_probe.py $OUT/12_variants.json --table
else
  el "variants skipped ($left s left)"
fi
grep -iE "error|Traceback|failed" $OUT/12_scan.log $OUT/12_model.log | head -6
echo
python3 bench/device/12_final_table.py $OUT/12_scan.json $OUT/12_model.json
el "end"
