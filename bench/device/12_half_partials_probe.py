"""Issue 12 device probe for the next session: our scan's forward+backward with the dB/dC partials in fp32 (default)
and in bf16 (CONFIG bwd_half_partials=1), at L = 1K, 2K, 4K, 16K (batch 8, dim 2048, N 16, bf16, the block's layout),
and 1 or 8 backward launches: time, peak memory, and how far dB, dC move from the fp32-partials run (relative error).
One process; rows to argv[1] as JSON after each; a short table last."""
import json
import sys

import torch

from hybrid.bench.harness import measure
from hybrid.bench.scan_inputs import scan_inputs
from hybrid.kernels.selective_scan import triton as ours

rows = []


def grads(x):
    leaves = [x[k] for k in ("B", "C")]
    y = ours.selective_scan_triton(**x, delta_softplus=True)
    return torch.autograd.grad(y, leaves, torch.ones_like(y))


for L in (1024, 2048, 4096, 16384):
    x = scan_inputs(8, 2048, 16, L, torch.bfloat16, "cuda", layout="block")
    ref = None
    for half in (0, 1):
        for seg in (1, 8):
            ours.CONFIG.update(bwd_half_partials=half, bwd_segments=seg)
            g = grads(x)
            ref = ref or g
            err = [((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in zip(g, ref)]
            r = measure(lambda i: ours.selective_scan_triton(**i, delta_softplus=True), x, "fwd+bwd", "cuda")
            rows.append(dict(L=L, bwd_half_partials=half, bwd_segments=seg, dB_rel=err[0], dC_rel=err[1], **r))
            json.dump(rows, open(sys.argv[1], "w"), indent=1)
    del x
print(f"{'L':>6} {'half':>4} {'seg':>3} {'ms':>8} {'peak MiB':>9} {'dB rel':>8} {'dC rel':>8}")
for r in rows:
    print(f"{r['L']:>6} {r['bwd_half_partials']:>4} {r['bwd_segments']:>3} {r['median_ms']:>8.3f} "
          f"{r['peak_mem_bytes'] / 2**20:>9.0f} {r['dB_rel']:>8.1e} {r['dC_rel']:>8.1e}")
