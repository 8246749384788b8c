"""`python -m hybrid.bench ssd_compiled [--dtype bf16|fp32] [--L N] [--warps JSON] [--out FILE]`

Compile our Triton SSD's kernels (kernels/ssd/triton.py, triton_bwd.py, dt_decays.py) for an NVIDIA sm_90 GPU on any
machine (no GPU needed) exactly as the launchers call them on the bench's shape (batch 8, 32 heads x 64, one group,
N 128, chunk 256), and print per kernel: warps, registers, spill bytes (ptxas -v), shared memory, SASS instructions.
No timings: these say which kernels spill or hold the SM alone (kernels/ssd/README.md's table). `--warps` overrides
num_warps per kernel, e.g. '{"_dx_kernel": 8}'. Counts change with the Triton version (the row records it).
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch

from hybrid.bench.scan_compiled import _Capture, compile_sm90, counts

_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class _Ctx:
    """Stands in for autograd's ctx to call DtDecays.forward / backward directly on meta tensors."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass


def launches(dtype, L: int) -> dict:
    """kernel name -> (JITFunction, args, kwargs) of its first launch in one forward + backward, on meta tensors."""
    from hybrid.kernels.ssd import dt_decays as dtd
    from hybrid.kernels.ssd import triton as fwd
    from hybrid.kernels.ssd import triton_bwd as bwd
    b, H, P, G, N, Q = 8, 32, 64, 1, 128, 256
    meta = dict(device="meta")
    x = torch.empty(b, L, H, P, dtype=dtype, **meta)
    dt, acs, lo = torch.empty(b, L, H, **meta), torch.empty(b, H, L, **meta), torch.empty(b, H, L, **meta)
    B, C, D = torch.empty(b, L, G, N, dtype=dtype, **meta), torch.empty(b, L, G, N, dtype=dtype, **meta), \
        torch.empty(H, **meta)
    lowp = 0 if dtype == torch.float32 else 1  # what _lowp gives on a GPU
    saved, caps = {}, {}
    try:
        for mod in (dtd, fwd, bwd):
            for name in [n for n in vars(mod) if n.endswith("_kernel")]:
                saved[(mod, name)] = getattr(mod, name)
                caps.setdefault(name, _Capture(saved[(mod, name)]))
                setattr(mod, name, caps[name])
            if hasattr(mod, "_lowp"):
                saved[(mod, "_lowp")] = mod._lowp
                mod._lowp = lambda t: lowp
        ctx = _Ctx()  # dt's preparation and the log decays (dt in the inputs' dtype, as the S block hands it over)
        dts, dacs, _ = dtd.DtDecays.forward(ctx, torch.empty(b, L, H, dtype=dtype, **meta), D, D, True,
                                            (0.0, math.inf), Q, L)
        dtd.DtDecays.backward(ctx, dts, dacs, None)
        _, _, HS = fwd.ssd_core_forward(x, dt, acs, lo, B, C, D, None, Q)
        bwd.ssd_core_backward(x, dt, acs, lo, B, C, D, HS, torch.empty_like(x), None, Q, L)
    finally:
        for (mod, name), v in saved.items():
            setattr(mod, name, v)
    return {name: (cap.fn, *cap.calls[0]) for name, cap in caps.items() if cap.calls}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench ssd_compiled", description=__doc__.split("\n\n")[1])
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="bf16")
    p.add_argument("--L", type=int, default=4096)
    p.add_argument("--warps", type=json.loads, default={}, help="kernel name -> num_warps (JSON)")
    p.add_argument("--out", type=Path, help="also write the rows here (long-format JSON)")
    a = p.parse_args(argv)
    rows = []
    for name, (fn, args, kw) in launches(_DTYPES[a.dtype], a.L).items():
        kw = dict(kw)
        if name in a.warps:
            kw["num_warps"] = a.warps[name]
        warps = kw.get("num_warps", 4)
        k = compile_sm90(fn, args, kw)
        c = counts(k)
        rows.append(dict(op="ssd_compiled", kernel=name, dtype=a.dtype, L=a.L, target="sm_90", num_warps=warps,
                         registers=c["registers"], spill_bytes=c["spill_bytes"], shared_bytes=k.metadata.shared,
                         sass_instructions=c["sass_instructions"]))
        print(f"{name:<26} warps {warps} registers {c['registers']} spills {c['spill_bytes']} "
              f"shared {k.metadata.shared / 1024:.0f} KB sass {c['sass_instructions']}", flush=True)
    if a.out:
        from hybrid.bench.harness import environment, write_rows
        write_rows(a.out, "ssd_compiled", environment("cpu"), rows,
                   shapes="batch 8, 32 heads x 64, 1 group, N 128, chunk 256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
