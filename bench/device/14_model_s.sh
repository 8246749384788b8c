#!/bin/bash
# Issue 14 (MAMBA2) on the GPU, from the repo root with .whl carried; at most 4.5 minutes (step timeout 250 s); results
# under $OUT (2 files): python -m hybrid.bench model --device cuda at its default shapes (batch 8 x L 2048, d_model
# 1024, 24 sublayers) for the mamba, mamba2, nemotron_h and transformer stacks side by side, the Mamba-2 ones per SSD
# backend (reference, triton, mamba_ssm), and the block rows (M, S per SSD backend, A, F, E, mamba-ssm's Mamba2 with
# use_mem_eff_path=False). Written to $OUT/model_cuda_s.json, never over the committed bench/results/model_cuda.json.
# mamba-ssm's SSD and Mamba2 module are pure Triton: their Python sources go on the path under a stub package
# __init__, as in 14_ssd.sh (no 3-minute build of the CUDA extension; so no mamba-ssm Mamba-1 rows here).
source .whl/setup_project.sh || exit 1
mkdir -p /tmp/m2src /tmp/m2stub/mamba_ssm
tar xzf .whl/src/mamba_ssm-2.3.2.post1.tar.gz -C /tmp/m2src
for d in ops utils modules distributed; do
  cp -r /tmp/m2src/mamba_ssm-2.3.2.post1/mamba_ssm/$d /tmp/m2stub/mamba_ssm/
done
echo '__version__ = "2.3.2.post1"' > /tmp/m2stub/mamba_ssm/__init__.py
export PYTHONPATH=$PYTHONPATH:/tmp/m2stub

timeout 250 python3 -m hybrid.bench model --device cuda --stacks mamba mamba2 nemotron_h transformer \
  --out "$OUT/model_cuda_s.json" > "$OUT/model_s.log" 2>&1
echo "== exit $? ; model bench (S stacks):"; grep -v "^  " "$OUT/model_s.log" | tail -30
