"""`python -m hybrid.bench scan_gpu_check [--phases check,mamba,sweep] [--out DIR]`: our Triton scan on a GPU, in one
process (a lent GPU's time is short).

check   outputs, last state and every gradient against a float64 reference computed on the GPU (the chunked
        reference on upcast inputs) at L = 64K and 1M, for fp32, fp16 and bf16 inputs; the inputs are bf16 values,
        exact in all three dtypes, so one reference serves the three. Determinism: two backward passes at the
        benchmark shape are bitwise equal.
mamba   ours and mamba-ssm's `selective_scan_fn` against a float64 reference and against each other (where
        mamba-ssm is installed).
sweep   times the forward and the backward kernels alone over tile shapes (CONFIG keys) at the benchmark shape
        (batch 8, dim 2048, N 16, bf16, L 4K), with every variant compiled first in parallel worker processes.
Writes DIR/scan_gpu_check.json (all numbers) and prints a short table per phase.
"""
import argparse
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
BENCH = dict(batch=8, dim=2048, N=16, L=4096)


def exact_inputs(batch, dim, L, N, seed=0, h0=True) -> dict:
    """Scan inputs on the GPU as fp32 tensors holding bf16 values (|x| >= 1e-5, so also exact in fp16); u, delta,
    B, C, z [batch, dim|N, L], A [dim, N], D, delta_bias [dim], initial_state [batch, dim, N]."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        x = torch.randn(*shape, generator=g, device="cuda") * scale + shift
        x = torch.where(x.abs() < 1e-5, torch.full_like(x, 1e-5), x)
        return x.bfloat16().float()

    out = dict(u=rnd(batch, dim, L), delta=rnd(batch, dim, L, scale=0.5, shift=-1.0),
               A=-(torch.rand(dim, N, generator=g, device="cuda") * 3 + 0.1).bfloat16().float(),
               B=rnd(batch, N, L), C=rnd(batch, N, L), D=rnd(dim), z=rnd(batch, dim, L),
               delta_bias=rnd(dim, scale=0.3), initial_state=rnd(batch, dim, N) if h0 else None)
    return out


def grads_of(fn, inp, gy, glast, dtype, **kw):
    """y, last state (or None) and the gradients of <y, gy> (+ <last, glast>) for inputs cast to `dtype` (u, delta,
    B, C, z; the parameters stay fp32)."""
    cast = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v) for k, v in inp.items() if v is not None}
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in cast.items()}
    out = fn(**leaves, delta_softplus=True, return_last_state=True, **kw)
    y, last = out
    outs, gos = [y], [gy.to(y.dtype)]
    if glast is not None:
        outs.append(last)
        gos.append(glast.to(last.dtype))
    names = list(leaves)
    g = torch.autograd.grad(outs, [leaves[k] for k in names], gos)
    return y.detach(), last.detach(), dict(zip(names, g))


def rel(x, ref) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def errors(res, ref) -> dict:
    y, last, g = res
    y64, last64, g64 = ref
    e = {"y": rel(y, y64), "last_state": rel(last, last64)}
    e.update({"d" + k: rel(g[k], g64[k]) for k in g if k in g64})
    return e


def phase_check(log) -> dict:
    from hybrid.kernels.selective_scan.reference import selective_scan_chunked
    from hybrid.kernels.selective_scan.triton import selective_scan_triton

    out = {"large": [], "ok": True}
    for batch, dim, L in ((2, 64, 65536), (1, 32, 2 ** 20)):
        t0 = time.perf_counter()
        inp = exact_inputs(batch, dim, L, 16, seed=L)
        g = torch.Generator(device="cuda").manual_seed(1)
        gy = torch.randn(batch, dim, L, generator=g, device="cuda").bfloat16().float()
        glast = torch.randn(batch, dim, 16, generator=g, device="cuda")
        inp64 = {k: (v.double() if v is not None else None) for k, v in inp.items()}
        ref = grads_of(selective_scan_chunked, inp64, gy.double(), glast.double(), torch.float64)
        t_ref = time.perf_counter() - t0
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            res = grads_of(selective_scan_triton, inp, gy, glast, dtype)
            e = errors(res, ref)
            ok = all(v < TOL[dtype] for v in e.values())
            out["ok"] &= ok
            row = dict(batch=batch, dim=dim, L=L, dtype=str(dtype), ok=ok, max_err=max(e.values()), errors=e)
            out["large"].append(row)
            log(f"check L={L} {dtype}: {'ok' if ok else 'FAIL'} max rel err {max(e.values()):.2e} "
                f"(reference {t_ref:.0f} s) {e}")
        del ref, inp, inp64
        torch.cuda.empty_cache()
    # determinism at the benchmark shape
    from hybrid.bench.scan_inputs import scan_inputs
    x = scan_inputs(BENCH["batch"], BENCH["dim"], BENCH["N"], BENCH["L"], torch.bfloat16, "cuda")
    gy = torch.randn(BENCH["batch"], BENCH["dim"], BENCH["L"], device="cuda", dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        y = selective_scan_triton(**x, delta_softplus=True)
        gs = torch.autograd.grad(y, [x[k] for k in x], gy)
        runs.append([t.clone() for t in gs])
    same = all(torch.equal(a, b) for a, b in zip(*runs))
    out["deterministic"] = same
    out["ok"] &= same
    log(f"check determinism (two backward passes, bench shape): {'bitwise equal' if same else 'DIFFER'}")
    return out


def phase_mamba(log) -> dict:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # noqa: BLE001 - any import failure means: not comparable here
        log(f"mamba: not available ({type(err).__name__}: {err})")
        return {"available": False, "error": str(err)}
    from hybrid.kernels.selective_scan.reference import selective_scan_chunked
    from hybrid.kernels.selective_scan.triton import selective_scan_triton

    out = {"available": True, "rows": []}
    for batch, dim, L in ((2, 256, 4096), (1, 64, 65536)):
        inp = exact_inputs(batch, dim, L, 16, seed=7, h0=False)
        g = torch.Generator(device="cuda").manual_seed(2)
        gy = torch.randn(batch, dim, L, generator=g, device="cuda").bfloat16().float()
        inp64 = {k: (v.double() if v is not None else None) for k, v in inp.items()}
        ref = grads_of(selective_scan_chunked, inp64, gy.double(), None, torch.float64)
        for dtype in (torch.float32, torch.bfloat16):
            ours = grads_of(selective_scan_triton, inp, gy, None, dtype)
            theirs = grads_of(selective_scan_fn, inp, gy, None, dtype)
            e_ours, e_theirs = errors(ours, ref), errors(theirs, ref)
            e_ours.pop("last_state")
            e_theirs.pop("last_state")
            between = {"y": rel(ours[0], theirs[0]), **{"d" + k: rel(ours[2][k], theirs[2][k]) for k in ours[2]}}
            out["rows"].append(dict(batch=batch, dim=dim, L=L, dtype=str(dtype), ours_vs_fp64=e_ours,
                                    mamba_vs_fp64=e_theirs, ours_vs_mamba=between))
            log(f"mamba L={L} {dtype}: max rel err vs fp64 ours {max(e_ours.values()):.2e}, mamba-ssm "
                f"{max(e_theirs.values()):.2e}; ours vs mamba-ssm max {max(between.values()):.2e}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# sweep: each variant is (kernel, version, cfg); cfg is the version's own list


# the kernels of the version before (v2: per-thread scans over channels x states, see the notes): its default and
def sweep_variants(small: bool = False) -> list[tuple[str, str, tuple]]:
    """(kernel, version, cfg) to time: tiles of `chunk` steps over (channels per program, warps), keeping each
    thread's share of a [channels, steps] tile between 2 and 16 values (more spills registers). `small`: around the
    winners of the last H100 sweep (one or two warps, 2 to 8 channels per program, short tiles)."""
    from hybrid.kernels.selective_scan.triton import make_cfg

    chunks = (32, 64, 128) if small else (32, 64, 128, 256, 512)
    out = []
    for chunk, bd, w in itertools.product(chunks, (1, 2, 4, 8, 16), (1, 2, 4, 8, 16)):
        per_thread = bd * chunk // (32 * w)
        if bd <= 8 and 2 <= per_thread <= 16 and not (small and (bd < 2 or w > 4)):
            out.append(("fwd", "new", tuple(make_cfg(chunk, dict(fwd_block_d=bd, fwd_warps=w)))))
        # fewer than 4 channels per program make the dB/dC partials too large
        if bd >= 4 and 2 <= per_thread <= 16 and not (small and (bd > 16 or w > 2)):
            out.append(("bwd", "new", tuple(make_cfg(chunk, dict(bwd_block_d=bd, bwd_warps=w)))))
    return out


def _modules():
    from hybrid.kernels.selective_scan import triton as new
    return {"new": new}


def _run_variant(mods, x, kernel, version, cfg, states_cache):
    """Returns a callable running one kernel of one variant on the bench inputs x."""
    m = mods[version]
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    cfg = list(cfg)
    if kernel == "fwd":
        return lambda: m._fwd(*args, None, True, True, cfg)
    key = (version, cfg[0])
    if key not in states_cache:
        states_cache[key] = m._fwd(*args, None, True, True, cfg)[2]
    states, dy = states_cache[key], x["dy"]
    return lambda: m._bwd(dy, None, *args, states, True, cfg)


def _bench_inputs():
    from hybrid.bench.scan_inputs import scan_inputs
    x = {k: v.detach() for k, v in scan_inputs(**BENCH, dtype=torch.bfloat16, device="cuda").items()}
    x["dy"] = torch.randn_like(x["u"])
    return x


def _warm(job):
    """Worker: compile (and run once) a share of the variants, so the timing process finds them in Triton's cache."""
    variants = job
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    mods, x, cache, bad = _modules(), _bench_inputs(), {}, []
    for v in variants:
        try:
            _run_variant(mods, x, *v, cache)()
            torch.cuda.synchronize()
        except Exception as err:  # noqa: BLE001 - a variant that does not compile is reported, not fatal
            bad.append((v, f"{type(err).__name__}: {str(err)[:300]}"))
    return bad


def phase_sweep(log, workers, small=False) -> dict:
    import multiprocessing as mp

    import triton.testing

    variants = sweep_variants(small)
    t0 = time.perf_counter()
    jobs = [variants[i::workers] for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        bad = [b for part in pool.map(_warm, jobs) for b in part]
    failed = {tuple(v): err for v, err in bad}
    log(f"sweep: {len(variants)} variants compiled in {time.perf_counter() - t0:.0f} s with {workers} workers, "
        f"{len(failed)} failed")
    mods, x, cache, rows = _modules(), _bench_inputs(), {}, []
    for v in variants:
        row = dict(kernel=v[0], version=v[1], cfg=list(v[2]))
        if v in failed:
            row["error"] = failed[v]
        else:
            try:
                fn = _run_variant(mods, x, *v, cache)
                row["ms"] = triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
            except Exception as err:  # noqa: BLE001
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        rows.append(row)
    for kernel in ("fwd", "bwd"):
        for version in ("new",):
            ok = sorted((r for r in rows if r["kernel"] == kernel and r["version"] == version and "ms" in r),
                        key=lambda r: r["ms"])
            for r in ok[:6]:
                log(f"sweep {kernel} {version} {r['ms']:.3f} ms cfg {r['cfg']}")
    log(f"sweep: done in {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "keys_new": list(mods["new"].CONFIG)}


def best_config(sweep: dict) -> dict:
    """The tile shapes with the fastest forward + backward: both kernels share `chunk` (the backward starts each tile
    from the state the forward saved there), so per chunk the fastest of each, then the best chunk."""
    from hybrid.kernels.selective_scan.triton import CONFIG
    keys = list(CONFIG)
    rows = [dict(r, c=dict(zip(keys, r["cfg"]))) for r in sweep["rows"] if r["version"] == "new" and "ms" in r]
    best = {}
    for chunk in {r["c"]["chunk"] for r in rows}:
        fwd = [r for r in rows if r["kernel"] == "fwd" and r["c"]["chunk"] == chunk]
        bwd = [r for r in rows if r["kernel"] == "bwd" and r["c"]["chunk"] == chunk]
        if fwd and bwd:
            f, b = min(fwd, key=lambda r: r["ms"]), min(bwd, key=lambda r: r["ms"])
            best[chunk] = (f["ms"] + b["ms"], f, b)
    _, f, b = min(best.values(), key=lambda x: x[0])
    return {k: (f["c"][k] if k.startswith("fwd") else b["c"][k]) for k in keys}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench scan_gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="check,mamba,sweep")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--small", action="store_true", help="sweep only the likely winners")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("scan_gpu_check needs a CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "scan_gpu_check.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["device"] = torch.cuda.get_device_name()
    lines = []

    def log(msg):
        lines.append(msg)
        print(msg, flush=True)

    for phase in args.phases.split(","):
        t0 = time.perf_counter()
        try:
            if phase == "check":
                result["check"] = phase_check(log)
            elif phase == "mamba":
                result["mamba"] = phase_mamba(log)
            elif phase == "sweep":
                result["sweep"] = phase_sweep(log, args.workers, args.small)
                result["best_config"] = best_config(result["sweep"])
                log(f"best config: {result['best_config']}")
            else:
                raise ValueError(f"unknown phase {phase!r}; allowed: check, mamba, sweep")
        except Exception:  # noqa: BLE001 - keep the other phases' results
            log(f"{phase}: FAILED\n{traceback.format_exc()}")
            result[phase + "_error"] = traceback.format_exc()
        result.setdefault("phase_s", {})[phase] = time.perf_counter() - t0
        path.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(["", "summary:"] + lines[-40:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
