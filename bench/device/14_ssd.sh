#!/bin/bash
# Issue 14 (MAMBA2) on the GPU, from the repo root with .whl carried; about 3 minutes; results under $OUT (5 files):
#   1. the SSD and S-block tests (CPU tensors) and, where our Triton SSD exists, its tests compiled on the GPU;
#   2. a check of hybrid.kernels.ssd against mamba-ssm's own Triton SSD (mamba_chunk_scan_combined) on the GPU:
#      outputs, final states and every gradient, fp32, relative error (the semantics, not speed);
#   3. python -m hybrid.bench ssd --device cuda (ours vs mamba-ssm's Triton SSD vs our Mamba-1 scan vs SDPA).
# mamba-ssm's SSD is pure Triton: its Python sources go on the path under a stub package __init__ (the real one
# imports the CUDA extension, which .whl/build_mamba_ssm.sh would take 3 minutes to build). Needs einops there.
source .whl/setup_project.sh || exit 1
mkdir -p /tmp/m2src /tmp/m2stub/mamba_ssm
tar xzf .whl/src/mamba_ssm-2.3.2.post1.tar.gz -C /tmp/m2src
cp -r /tmp/m2src/mamba_ssm-2.3.2.post1/mamba_ssm/ops /tmp/m2src/mamba_ssm-2.3.2.post1/mamba_ssm/utils /tmp/m2stub/mamba_ssm/
echo '__version__ = "2.3.2.post1"' > /tmp/m2stub/mamba_ssm/__init__.py
export PYTHONPATH=$PYTHONPATH:/tmp/m2stub
python3 -c "from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined" 2>&1 | tail -1 > "$OUT/mamba_ssm_import.txt"

timeout 100 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_ssd.py tests/test_mamba2.py \
  $(ls tests/kernels/test_triton_ssd.py 2>/dev/null) > "$OUT/tests.log" 2>&1

timeout 60 python3 - > "$OUT/check_vs_mamba_ssm.txt" 2>&1 <<'PY'
import torch
from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
from hybrid.kernels.ssd import ssd
torch.manual_seed(0)
rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
for (b, L, h, p, g, n, chunk, limit) in [(2, 300, 6, 32, 2, 64, 64, (0.0, float("inf"))),
                                          (1, 1000, 4, 64, 1, 128, 256, (0.001, 0.1))]:
    t = dict(x=torch.randn(b, L, h, p), dt=torch.randn(b, L, h) * 0.5 - 2, A=-torch.rand(h) * 4 - 0.5,
             B=torch.randn(b, L, g, n), C=torch.randn(b, L, g, n), D=torch.randn(h), z=torch.randn(b, L, h, p),
             dt_bias=torch.randn(h) * 0.1, initial_states=torch.randn(b, h, p, n))
    outs = []
    for fn in (lambda **a: mamba_chunk_scan_combined(**a, chunk_size=chunk, dt_softplus=True, dt_limit=limit,
                                                     return_final_states=True),
               lambda **a: ssd(**a, chunk_size=chunk, dt_softplus=True, dt_limit=limit, return_final_states=True,
                               backend="reference")):
        leaves = {k: v.cuda().requires_grad_(True) for k, v in t.items()}
        y, s = fn(**leaves)
        torch.manual_seed(1)
        ((y * torch.randn_like(y)).sum() + (s * torch.randn_like(s)).sum()).backward()
        outs.append((y, s, {k: v.grad for k, v in leaves.items()}))
    (y0, s0, g0), (y1, s1, g1) = outs
    errs = {"y": rel(y1, y0), "final_state": rel(s1, s0), **{f"d{k}": rel(g1[k], g0[k]) for k in g0}}
    print(f"shape b{b} L{L} h{h} p{p} g{g} n{n} chunk{chunk} dt_limit{limit}: ours vs mamba-ssm rel err "
          + " ".join(f"{k} {v:.1e}" for k, v in errs.items()))
PY

timeout 150 python3 -m hybrid.bench ssd --device cuda --out "$OUT/ssd_cuda_h200.json" > "$OUT/bench.log" 2>&1
echo "== mamba-ssm import: $(cat "$OUT/mamba_ssm_import.txt")"
echo "== tests: $(tail -1 "$OUT/tests.log")"
echo "== ours vs mamba-ssm:"; cat "$OUT/check_vs_mamba_ssm.txt" | tail -4
echo "== ssd bench:"; grep -v "^  L=" "$OUT/bench.log" | tail -40
