#!/bin/bash
# Issue 14 (MAMBA2), session 5's SSD measurement, from the repo root with .whl carried; about 3 minutes (step timeouts
# CHECK_S 40 + BENCH_S 75 + STAGES_S 40 + TESTS_S 15 s, in that order of importance; BENCH_S=0 or TESTS_S=0 skips
# that step); results under $OUT (4 files):
#   checks.txt      our Triton SSD at the bench's shape and L 4096, bf16: two runs' outputs and gradients bitwise
#                   equal (this step compiles the kernels the bench then finds in Triton's disk cache); the
#                   fused gated RMSNorm (norm_backend="triton") against the PyTorch one at the block's shape, twice
#                   bitwise; last, three of our Triton SSD tests compiled on the GPU (bf16 and fp32 with D per channel
#                   against float64, determinism; small tiles, quick to compile; the production tiles are the check's);
#   ssd_final.json  python -m hybrid.bench ssd --ssd-only: ours, mamba-ssm's Triton SSD, fwd and fwd+bwd
#                   at L 1K..64K (batch 8, 32 heads x 64, N 128, chunk 256, bf16) with peak memory, one process, each
#                   provider over every length before the next (mamba-ssm's first call autotunes: it delays only its
#                   own rows);
#   ssd_stages_block.json  a second run: per-kernel GPU times of each at L 16K (--stages) and the S block (ours,
#                   ours with the fused norm) vs mamba-ssm's Mamba2 (no CUDA conv), batch 8, L 2048, d_model 1024,
#                   bf16, fwd+bwd with peak memory (--block);
#   bench.log       both runs' output (the tables are printed last here).
# Separate processes, each with its limit, so that a slow step (mamba-ssm compiling its autotuning configs in the
# first) cannot take the others' results; the second finds the compiled kernels in Triton's disk cache.
# mamba-ssm: the built package where `import mamba_ssm` works, else its pure-Triton SSD and Mamba2 module from the
# source tarball in .whl/src under a stub package __init__ (as 14_ssd.sh), else no mamba-ssm rows. Only bf16 runs of
# mamba-ssm (its fp32 autotuning takes over a minute).
source .whl/setup_project.sh || exit 1
if ! python3 -c "import mamba_ssm.ops.triton.ssd_combined" 2>/dev/null; then
  SRC=$(ls .whl/src/mamba_ssm-*.tar.gz 2>/dev/null | head -1)
  if [ -n "$SRC" ]; then
    rm -rf /tmp/m2src /tmp/m2stub && mkdir -p /tmp/m2src /tmp/m2stub/mamba_ssm && tar xzf "$SRC" -C /tmp/m2src
    for d in ops utils modules distributed; do
      cp -r /tmp/m2src/mamba_ssm-*/mamba_ssm/$d /tmp/m2stub/mamba_ssm/
    done
    echo '__version__ = "stub from .whl/src"' > /tmp/m2stub/mamba_ssm/__init__.py
    export PYTHONPATH=$PYTHONPATH:/tmp/m2stub
  fi
fi
MAMBA=$(python3 -c "import mamba_ssm.ops.triton.ssd_combined, mamba_ssm; print('mamba-ssm', mamba_ssm.__version__)" \
  2>&1 | tail -1)

timeout ${CHECK_S:-40} python3 - > "$OUT/checks.txt" 2>&1 <<'PY'
import torch
from hybrid.bench.ssd import ssd_inputs
from hybrid.kernels.ssd import interface
rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
x = ssd_inputs(8, 4096, 32, 64, 128, torch.bfloat16, "cuda")
g = torch.randn(8, 4096, 32, 64, device="cuda", dtype=torch.bfloat16)
leaves = [k for k in x if x[k].is_leaf]  # D and dt_bias are fp32 casts of bf16 leaves
runs = []
for _ in range(2):  # printed as soon as known: a cut step keeps what it found
    y = interface.ssd(**x, chunk_size=256, dt_softplus=True, backend="triton")
    y.backward(g)
    runs.append([y.detach().clone()] + [x[k].grad.clone() for k in leaves])
    for k in leaves:
        x[k].grad = None
print("twice bitwise equal:", all(torch.equal(a, b) for a, b in zip(*runs)), flush=True)
from hybrid.blocks.mamba2 import GatedRMSNorm  # the fused gated RMSNorm against the PyTorch one, the block's shape
y0, z0, gn = (torch.randn(8, 2048, 2048, device="cuda", dtype=torch.bfloat16) for _ in range(3))
res = []
for backend in ("torch", "triton", "triton"):
    norm = GatedRMSNorm(2048, 2048, 1e-5, False, backend).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 2048))
    yy, zz = y0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    out = norm(yy, zz)
    out.backward(gn)
    res.append([out.detach(), yy.grad, zz.grad, norm.weight.grad])
print("fused norm twice bitwise equal:", all(torch.equal(a, b) for a, b in zip(res[1], res[2])), "; vs torch rel diff: "
      + " ".join(f"{n} {rel(a, b):.1e}" for n, a, b in zip(("out", "dy", "dz", "dw"), res[1], res[0])))
PY

if [ "${BENCH_S:-75}" = 0 ]; then echo "== bench skipped (BENCH_S=0)" >> "$OUT/bench.log"; else
  timeout ${BENCH_S:-75} python3 -m hybrid.bench ssd --device cuda --ssd-only --providers-first \
    --providers ours:triton mamba_ssm --out "$OUT/ssd_final.json" > "$OUT/bench.log" 2>&1
  echo "== bench exit $?" >> "$OUT/bench.log"
fi
timeout ${STAGES_S:-40} python3 -m hybrid.bench ssd --device cuda --ssd-only --providers ours:triton mamba_ssm \
  --lengths 1024 --stages 16384 --block --out "$OUT/ssd_stages_block.json" >> "$OUT/bench.log" 2>&1
echo "== stages/block exit $?" >> "$OUT/bench.log"
if [ "${TESTS_S:-15}" = 0 ]; then echo "tests skipped (TESTS_S=0)" >> "$OUT/checks.txt"; else
  timeout ${TESTS_S:-15} python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_ssd.py \
    -k "bf16_inputs or per_channel or deterministic or s_block" >> "$OUT/checks.txt" 2>&1
  echo "tests exit $?" >> "$OUT/checks.txt"
fi
echo "== $MAMBA"
echo "== checks:"; grep "passed\|failed\|error\|tests exit\|tests skipped\|bitwise\|rel diff" "$OUT/checks.txt" | tail -7
echo "== stages and block:"; grep -v "^  L=\|^  block \|^USDT\|Warning\|warn\|^wrote" "$OUT/bench.log" \
  | grep -v "^ *[0-9]* ours\|^ *[0-9]* mamba\|^ *L provider\|rows in" | tail -50
echo "== ssd (ms, peak MiB):"; grep "exit\|^ *L provider\|^ *[0-9]* ours:triton\|^ *[0-9]* mamba_ssm" "$OUT/bench.log"
