"""Issue 12 device probe: our scan's forward+backward time and peak memory against the number of backward launches
(CONFIG bwd_segments) at L = 1K, 2K, 4K, 16K (batch 8, dim 2048, N 16, bf16, the block's layout), then a few tile
shapes at L = 2K, one process. Writes the rows as JSON to argv[1] after each."""
import json
import sys

from hybrid.bench.harness import measure
from hybrid.bench.scan_inputs import scan_inputs
from hybrid.kernels.selective_scan import triton as ours

rows = []
for L in (1024, 2048, 4096, 16384):
    x = scan_inputs(8, 2048, 16, L, __import__("torch").bfloat16, "cuda", layout="block")
    for seg in (1, 2, 4, 8):
        ours.CONFIG["bwd_segments"] = seg
        r = measure(lambda i: ours.selective_scan_triton(**i, delta_softplus=True), x, "fwd+bwd", "cuda")
        rows.append(dict(L=L, bwd_segments=seg, **r))
        print(f"L {L:>6} segments {seg}: {r['median_ms']:.3f} ms, peak {r['peak_mem_bytes'] / 2**20:.0f} MiB", flush=True)
    del x
    json.dump(rows, open(sys.argv[1], "w"), indent=1)
# a few tile shapes at the model bench's length (each compiles its kernels first)
ours.CONFIG["bwd_segments"] = 8
x = scan_inputs(8, 2048, 16, 2048, __import__("torch").bfloat16, "cuda", layout="block")
for cfg in ({}, {"bwd_block_d": 16, "bwd_warps": 2}, {"bwd_block_d": 4}, {"chunk": 64}, {"chunk": 16}):
    saved = dict(ours.CONFIG)
    ours.CONFIG.update(cfg)
    r = measure(lambda i: ours.selective_scan_triton(**i, delta_softplus=True), x, "fwd+bwd", "cuda")
    ours.CONFIG.clear()
    ours.CONFIG.update(saved)
    rows.append(dict(L=2048, config=cfg, **r))
    print(f"L 2048 config {cfg}: {r['median_ms']:.3f} ms, peak {r['peak_mem_bytes'] / 2**20:.0f} MiB", flush=True)
    json.dump(rows, open(sys.argv[1], "w"), indent=1)
