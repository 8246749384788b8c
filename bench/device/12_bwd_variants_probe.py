"""Issue 12 device probe: our scan's backward variants side by side in one process (and mamba-ssm's scan where
`selective_scan_cuda` imports), forward+backward ms and peak MiB at L = 1K, 4K, 16K (64K while the budget lasts),
batch 8, dim 2048, N 16, bf16, the block's layout. Every variant's gradients are first checked on the GPU against the
fp32 reference (selective_scan_chunked on fp32 copies of the same inputs; batch 2, dim 256, L 1040: a partial tile,
several backward segments, the timed shapes' compile-time specialisation, so no extra compilation) and for bitwise
repeatability. Padded channel blocks and odd shapes are the interpreter tests' (tests/kernels/test_triton_scan.py).

    python3 bench/device/12_bwd_variants_probe.py OUT.json [--budget-s 110] [--lengths 1024 4096 16384 65536]
    python3 bench/device/12_bwd_variants_probe.py --warm NAME   # compile one variant (Triton's cache), then exit
    python3 bench/device/12_bwd_variants_probe.py --list        # the variants' names
    TRITON_INTERPRET=1 python3 bench/device/12_bwd_variants_probe.py OUT.json --smoke --variants default seg1
        # the same code path on the CPU at toy shapes (a dry run of the script's logic; no timings worth reading)

Rows (long format) to OUT.json after each measurement; a short table last.
"""
import argparse
import json
import sys
import time

import torch

from hybrid.bench.harness import environment, safe_measure
from hybrid.bench.scan_inputs import scan_inputs
from hybrid.kernels.selective_scan.reference import selective_scan_chunked
from hybrid.kernels.selective_scan.triton import selective_scan_triton

# name -> CONFIG keys; "default" is today's CONFIG (rolled with prefetch, inline PTX 7, 128 registers, 16-bit
# partials, backward launches chosen from the partials' memory: 4 at these shapes, dB/dC summed in one launch a
# segment); "s4_default" session 4's kernel options (no PTX, no cap, fp32 partials, 8 launches; its dB/dC sums now one
# launch a segment too); the others change one thing
VARIANTS = {
    "default": {},
    "s4_default": dict(bwd_asm=0, bwd_maxnreg=0, bwd_half_partials=0, bwd_segments=8),
    "seg1": dict(bwd_segments=1),
    "seg2": dict(bwd_segments=2),
    "seg8": dict(bwd_segments=8),
    "fp32_partials": dict(bwd_half_partials=0),  # 8 launches (the memory bound)
    "asm3": dict(bwd_asm=3),
    "no_prefetch": dict(bwd_prefetch=0),
    "no_cap": dict(bwd_maxnreg=0),
    "cap160": dict(bwd_maxnreg=160),
    "tables": dict(bwd_kernel=0, bwd_prefetch=0, bwd_asm=0, bwd_maxnreg=0),  # the unrolled kernel, 4 launches
}
# at L = 64K (while the budget lasts) only these, mamba-ssm first
LONG = ("default", "s4_default", "fp32_partials", "seg8", "no_cap")
GRADS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def mamba_fn():
    """mamba-ssm's selective_scan_fn, or None (with the reason printed) when it does not import."""
    try:
        import selective_scan_cuda  # noqa: F401 - the compiled extension; the interface imports it lazily
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # noqa: BLE001 - not built in this call, or built for another torch
        print(f"mamba_ssm: not timed ({type(err).__name__}: {err})", flush=True)
        return None
    return lambda x: selective_scan_fn(**x, delta_softplus=True)


def grads_of(fn, x, gy):
    leaves = {k: x[k] for k in GRADS}
    y = fn(x)
    return dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), gy)))


def check(name, fn, dev, shape):
    """Relative error of every gradient against the fp32 reference, and whether two backward passes are equal."""
    batch, dim, L = shape
    x = scan_inputs(batch, dim, 16, L, torch.bfloat16, dev, seed=1, layout="block")
    x32 = {k: v.detach().float().requires_grad_(True) for k, v in x.items()}
    gy = torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(2)).to(dev)
    ref = grads_of(lambda i: selective_scan_chunked(**i, delta_softplus=True), x32, gy)
    g1 = grads_of(fn, x, gy.to(torch.bfloat16))
    g2 = grads_of(fn, x, gy.to(torch.bfloat16))
    rel = {k: ((g1[k].float() - ref[k]).norm() / ref[k].norm()).item() for k in GRADS}
    same = all(torch.equal(g1[k], g2[k]) for k in GRADS)
    print(f"check {name:>14}: max rel err {max(rel.values()):.2e} ({max(rel, key=rel.get)}), "
          f"repeatable {same}", flush=True)
    return dict(kind="check", variant=name, rel_err=rel, max_rel_err=max(rel.values()), bitwise_repeatable=same)


def ours(cfg):
    return lambda x: selective_scan_triton(**x, delta_softplus=True, config=cfg)


def fastest(rows):
    """The variant of ours with the smallest summed fwd+bwd time over the lengths every checked variant reached
    (its gradient check passed), or None."""
    ok = {r["variant"] for r in rows if r["kind"] == "check" and r.get("max_rel_err", 1) < 5e-2} & set(VARIANTS)
    timed = [r for r in rows if r["kind"] == "time" and r.get("median_ms") and r["variant"] in ok]
    lengths = {L for L in {r["L"] for r in timed} if all(any(r["variant"] == v and r["L"] == L for r in timed)
                                                          for v in ok)}
    totals = {v: sum(r["median_ms"] for r in timed if r["variant"] == v and r["L"] in lengths) for v in ok}
    return min(totals, key=totals.get) if lengths else None


def table(rows, names):
    """Print fwd+bwd ms and peak MiB per variant and L, with ratios to mamba-ssm's where it ran, and each variant's
    largest gradient error."""
    timed = [r for r in rows if r["kind"] == "time" and r.get("median_ms")]
    by = {(r["variant"], r["L"]): r for r in timed}
    Ls = sorted({r["L"] for r in timed})
    print("\nfwd+bwd ms (x mamba-ssm) / peak MiB (x mamba-ssm), batch 8, dim 2048, N 16, bf16, block layout")
    print(f"{'variant':>14} " + " ".join(f"{'L=' + str(L):>26}" for L in Ls) + f" {'max rel err':>11}")
    errs = {r["variant"]: r.get("max_rel_err") for r in rows if r["kind"] == "check"}
    for name in names:
        cells = []
        for L in Ls:
            r, m = by.get((name, L)), by.get(("mamba_ssm", L))
            if r is None:
                cells.append(f"{'-':>26}")
                continue
            ms, mib = r["median_ms"], (r["peak_mem_bytes"] or 0) / 2**20
            rt = f"({ms / m['median_ms']:.2f})" if m else ""
            rm = f"({r['peak_mem_bytes'] / m['peak_mem_bytes']:.2f})" if m and m["peak_mem_bytes"] else ""
            cells.append(f"{ms:7.2f}{rt:>6} {mib:6.0f}{rm:>6}")
        e = errs.get(name)
        print(f"{name:>14} " + " ".join(cells) + (f" {e:11.1e}" if e is not None else f" {'failed':>11}"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?")
    p.add_argument("--warm", choices=list(VARIANTS))
    p.add_argument("--list", action="store_true", help="print the variants' names, one a line")
    p.add_argument("--table", action="store_true", help="print the table of OUT.json (written by a run) and exit")
    p.add_argument("--budget-s", type=float, default=110.0, help="start no measurement after this many seconds")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS) + ["mamba_ssm"], help="default: all")
    p.add_argument("--smoke", action="store_true", help="CPU, toy shapes (run under TRITON_INTERPRET=1)")
    a = p.parse_args()
    dev, batch, dim = ("cpu", 1, 16) if a.smoke else ("cuda", 8, 2048)
    check_shape = (2, 12, 70) if a.smoke else (2, 256, 1040)
    lengths = [64] if a.smoke else a.lengths
    if a.table:
        rows = json.load(open(a.out))["rows"]
        table(rows, list(dict.fromkeys(r["variant"] for r in rows)))
        return 0
    if a.list:
        print("\n".join(VARIANTS))
        return 0
    if a.warm:  # compile the variant's kernels at the timed shapes (the same specialisation at every L)
        x = scan_inputs(8, 2048, 16, 1024, torch.bfloat16, "cuda", layout="block")
        y = selective_scan_triton(**x, delta_softplus=True, config=VARIANTS[a.warm])
        y.backward(torch.randn_like(y))  # a dense gradient in y's layout, as the timed runs (bwd_asm needs it)
        torch.cuda.synchronize()
        return 0
    t0 = time.time()
    env = environment(dev)
    names = a.variants or list(VARIANTS) + ["mamba_ssm"]
    providers = {name: ours(VARIANTS[name]) for name in names if name in VARIANTS}
    mamba = mamba_fn() if "mamba_ssm" in names and not a.smoke else None
    if mamba is not None:  # first: every L's ratios need its row
        providers = {"mamba_ssm": mamba, **providers}
    rows = []

    def save():
        json.dump(dict(bench="scan_bwd_variants", **env, variants=VARIANTS, rows=rows), open(a.out, "w"), indent=1)

    for name, fn in providers.items():
        try:
            rows.append(check(name, fn, dev, check_shape))
        except Exception as err:  # noqa: BLE001 - a variant that fails is recorded, the others still run
            print(f"check {name}: failed: {type(err).__name__}: {str(err)[:300]}", flush=True)
            rows.append(dict(kind="check", variant=name, error=f"{type(err).__name__}: {str(err)[:300]}"))
    save()
    # a variant whose gradients failed the check (or raised) is not timed
    failed = {r["variant"] for r in rows
              if r.get("error") or (r["variant"] != "mamba_ssm" and not r.get("max_rel_err", 1) < 5e-2)}
    for L in lengths:
        x = scan_inputs(batch, dim, 16, L, torch.bfloat16, dev, layout="block")
        for name, fn in providers.items():
            if L > 16384 and name not in LONG + ("mamba_ssm",):
                continue
            if time.time() - t0 > a.budget_s:
                print(f"L={L} {name}: skipped (budget)", flush=True)
                continue
            if name in failed:
                continue
            try:
                r = safe_measure(fn, x, "fwd+bwd", dev)
            except Exception as err:  # noqa: BLE001 - e.g. a launch option this Triton lacks: record, go on
                failed.add(name)
                print(f"L={L} {name}: failed: {type(err).__name__}: {str(err)[:300]}", flush=True)
                rows.append(dict(kind="time", variant=name, L=L, error=f"{type(err).__name__}: {str(err)[:300]}"))
                continue
            rows.append(dict(kind="time", variant=name, config=VARIANTS.get(name), L=L, layout="block",
                             mode="fwd+bwd", batch=batch, dim=dim, N=16, dtype="bf16", **r))
            print(f"L={L} {name}: {r['median_ms']} ms, peak {r['peak_mem_bytes']}", flush=True)
            save()
        del x
        if dev == "cuda":
            torch.cuda.empty_cache()
    best = fastest(rows)
    if best:  # for a later step of the same device call (e.g. the model bench's --config)
        json.dump(VARIANTS[best], open("/tmp/scan_bwd_best.json", "w"))
        print(f"best: {best} {json.dumps(VARIANTS[best])} (written to /tmp/scan_bwd_best.json)", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
