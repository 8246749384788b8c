"""`python -m hybrid.bench scan [--device cpu|cuda] [--lengths ...] [--out bench/results/scan_<device>.json]`

The Mamba-1 selective scan, side by side in one process, forward ("fwd": a training forward, inputs requiring
grad) and forward + backward ("fwd+bwd"), over sequence lengths L:

    ours         our Triton kernels (kernels/selective_scan/triton.py), CUDA only
    reference    the chunked PyTorch reference with its hand-written backward
    sequential   the loop-over-time definition (small L only)
    mamba_ssm    mamba-ssm's CUDA kernel, where installed
    attention    SDPA causal attention of the same width (heads * head_dim = dim), the block a scan replaces
    floor:memory bytes read + written by the op (inputs once, outputs once) / measured device copy bandwidth
    floor:exp    batch*dim*L*N exponentials (x2 for fwd+bwd: the backward recomputes them) / measured exp rate

CUDA: batch 8, dim 2048, N 16, bf16 (attention 16 heads of 128), L in 1K, 4K, 16K, 64K; timings are the median
and 20/80% quantiles of triton.testing.do_bench. CPU: batch 1, dim 256, N 16, fp32 (attention 2 heads of 128),
L in 64, 256, 1024, timings the median of time.perf_counter repeats, on one thread unless --threads says otherwise
(several threads on a shared machine give noise, not speed). `first_call_ms` is the first call of each
(provider, mode, L), which holds Triton's compile time on CUDA; it is reported apart from the timings.
Rows are long-format JSON: op, provider, mode, L, median_ms, p20_ms, p80_ms, peak_mem_bytes (CUDA: peak allocated
during one call beyond what was allocated before it; CPU: null), first_call_ms, device, versions, commit.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {
    "cuda": dict(batch=8, dim=2048, N=16, dtype=torch.bfloat16, head_dim=128, lengths=(1024, 4096, 16384, 65536),
                 sequential_max_L=1024, reference_max_L=4096),
    "cpu": dict(batch=1, dim=256, N=16, dtype=torch.float32, head_dim=128, lengths=(64, 256, 1024),
                sequential_max_L=256, reference_max_L=1024),
}
MODES = ("fwd", "fwd+bwd")


def scan_inputs(batch, dim, N, L, dtype, device, seed=0) -> dict:
    """Inputs like a Mamba block's (S4D-real A, softplus'd delta around 0.01..0.1), all requiring grad.

    u, delta, z: [batch, dim, L] in dtype; B, C: [batch, N, L] in dtype; A: [dim, N], D, delta_bias: [dim] fp32.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, dt=dtype, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt).requires_grad_(True)

    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)  # [dim, N]
    dt_bias = torch.log(torch.expm1(torch.empty(dim).uniform_(0.01, 0.1, generator=g)))  # softplus^-1
    return dict(u=rnd(batch, dim, L), delta=rnd(batch, dim, L, scale=0.1), A=A.to(device).requires_grad_(True),
                B=rnd(batch, N, L), C=rnd(batch, N, L), D=rnd(dim, dt=torch.float32), z=rnd(batch, dim, L),
                delta_bias=dt_bias.to(device).requires_grad_(True))


def scan_providers(device: str) -> dict:
    """name -> f(inputs) -> y, for the scan implementations that can run on `device`."""
    from hybrid.kernels.selective_scan.reference import selective_scan_chunked, selective_scan_sequential

    out = {}
    if device == "cuda":
        from hybrid.kernels.selective_scan.triton import selective_scan_triton
        out["ours"] = lambda x: selective_scan_triton(**x, delta_softplus=True)
    out["reference"] = lambda x: selective_scan_chunked(**x, delta_softplus=True)
    out["sequential"] = lambda x: selective_scan_sequential(**x, delta_softplus=True)
    if device == "cuda":
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception as err:  # noqa: BLE001 - not installed, or built for another torch: skip it, say why
            print(f"mamba_ssm: not timed ({type(err).__name__}: {err})", file=sys.stderr)
        else:
            out["mamba_ssm"] = lambda x: selective_scan_fn(**x, delta_softplus=True)
    return out


def attention_inputs(batch, dim, L, head_dim, dtype, device) -> dict:
    """q, k, v: [batch, dim // head_dim, L, head_dim], requiring grad."""
    heads = max(1, dim // head_dim)
    return {k: torch.randn(batch, heads, L, head_dim, device=device, dtype=dtype, requires_grad=True)
            for k in ("q", "k", "v")}


def attention(x):
    return F.scaled_dot_product_attention(x["q"], x["k"], x["v"], is_causal=True)


def attention_providers(device) -> dict:
    """name -> f(q, k, v inputs): SDPA with torch's own choice on the CPU; on CUDA pinned to the flash and the cuDNN
    backends (each skipped, with its error recorded, where it cannot run)."""
    if device != "cuda":
        return {"attention:sdpa": attention}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def pinned(backend):
        def f(x):
            with sdpa_kernel([backend]):
                return attention(x)
        return f
    return {"attention:flash": pinned(SDPBackend.FLASH_ATTENTION),
            "attention:cudnn": pinned(SDPBackend.CUDNN_ATTENTION)}


def measure(fn, inputs, mode, device) -> dict:
    """Time `fn(inputs)` (mode fwd) or its forward + backward (fwd+bwd). Returns median/p20/p80/first-call ms and
    the peak memory of one call."""
    leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor) and t.requires_grad]
    grad = {}

    def step():
        y = fn(inputs)
        if mode == "fwd+bwd":
            if "g" not in grad:
                grad["g"] = torch.randn_like(y)
            y.backward(grad["g"])
            for t in leaves:
                t.grad = None

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    step()
    sync()
    first = (time.perf_counter() - t0) * 1e3
    peak = torch.cuda.max_memory_allocated() - base if device == "cuda" else None
    if device == "cuda":
        import triton.testing
        med, p20, p80 = triton.testing.do_bench(step, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
    else:
        med, p20, p80 = cpu_timing(step)
    return dict(median_ms=med, p20_ms=p20, p80_ms=p80, first_call_ms=first, peak_mem_bytes=peak)


def cpu_timing(step, budget_s=0.2, min_reps=3, max_reps=30):
    """Median and 20/80% quantiles (ms) of perf_counter timings, repeating until the budget is spent."""
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5, method="inclusive")
    return statistics.median(times), q[0], q[3]


def copy_bandwidth(device) -> float:
    """Measured device copy bandwidth, bytes (read + written) per second."""
    n = (256 if device == "cuda" else 32) * 2 ** 20 // 4
    x = torch.randn(n, device=device)
    y = torch.empty_like(x)
    if device == "cuda":
        import triton.testing
        ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=10, rep=50)
    else:
        ms = cpu_timing(lambda: y.copy_(x), budget_s=0.2)[0]
    return 2 * x.numel() * 4 / (ms * 1e-3)


def exp_rate(device) -> float:
    """Measured exponentials per second: ex2 in registers on CUDA (the instruction our kernels use), torch.exp on a
    cache-resident tensor on the CPU."""
    if device == "cuda":
        import triton.testing

        from hybrid.kernels.selective_scan.triton import exp_throughput_kernel
        n, iters = 2 ** 22, 256
        x = torch.rand(n, device=device)
        ms = triton.testing.do_bench(lambda: exp_throughput_kernel[(n // 1024,)](x, ITERS=iters, BLOCK=1024),
                                     warmup=10, rep=50)
        return n * iters / (ms * 1e-3)
    x = torch.rand(2 ** 14)
    out = torch.empty_like(x)
    ms = cpu_timing(lambda: [torch.exp(x, out=out) for _ in range(50)], budget_s=0.2)[0]
    return 50 * x.numel() / (ms * 1e-3)


def floor_rows(batch, dim, N, L, dtype, bandwidth, exps_per_s) -> list[dict]:
    """The two lower bounds per mode (ms): bytes once through memory; exponentials at the measured rate."""
    e = torch.tensor([], dtype=dtype).element_size()
    x, bc = batch * dim * L * e, batch * N * L * e  # one [batch, dim, L] tensor; one [batch, N, L] tensor
    bytes_ = {"fwd": 3 * x + 2 * bc + x,  # u, delta, z, B, C in; y out
              "fwd+bwd": (3 * x + 2 * bc + x) + (4 * x + 2 * bc) + (3 * x + 2 * bc)}  # bwd: +dy in; du ddelta dz dB dC
    exps = {"fwd": batch * dim * L * N, "fwd+bwd": 2 * batch * dim * L * N}
    rows = []
    for mode in MODES:
        for name, ms in (("floor:memory", bytes_[mode] / bandwidth * 1e3), ("floor:exp", exps[mode] / exps_per_s * 1e3)):
            rows.append(dict(op="scan", provider=name, mode=mode, L=L, median_ms=ms, p20_ms=ms, p80_ms=ms,
                             first_call_ms=None, peak_mem_bytes=None))
    return rows


def environment(device) -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("triton", "mamba_ssm"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except ImportError:
            pass
    if device == "cuda":
        name = torch.cuda.get_device_name()
        versions["cuda"] = torch.version.cuda
    else:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, check=False).stdout.strip()
    dirty = bool(git("status", "--porcelain", "--", "hybrid", "kernels"))
    return {"device": name, "versions": versions, "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" * dirty),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0]}


def run(device, lengths, shape) -> list[dict]:
    batch, dim, N, dtype, hd = shape["batch"], shape["dim"], shape["N"], shape["dtype"], shape["head_dim"]
    providers = scan_providers(device)
    bandwidth, exps = copy_bandwidth(device), exp_rate(device)
    print(f"measured: copy bandwidth {bandwidth / 1e9:.1f} GB/s, exp rate {exps / 1e9:.1f} G/s")
    rows = []
    for L in lengths:
        x = scan_inputs(batch, dim, N, L, dtype, device)
        for name, fn in providers.items():
            if (name == "sequential" and L > shape["sequential_max_L"]) or (name == "reference" and
                                                                            L > shape["reference_max_L"]):
                continue
            for mode in MODES:
                rows.append(dict(op="scan", provider=name, mode=mode, L=L, **safe_measure(fn, x, mode, device)))
                print(f"  L={L} {name} {mode}: {rows[-1]['median_ms']} ms", file=sys.stderr, flush=True)
        a = attention_inputs(batch, dim, L, hd, dtype, device)
        for name, fn in attention_providers(device).items():
            for mode in MODES:
                rows.append(dict(op="attention", provider=f"{name} {dim // hd}x{hd}", mode=mode, L=L,
                                 **safe_measure(fn, a, mode, device)))
                print(f"  L={L} {name} {mode}: {rows[-1]['median_ms']} ms", file=sys.stderr, flush=True)
        del x, a
        rows += floor_rows(batch, dim, N, L, dtype, bandwidth, exps)
    return rows


def safe_measure(fn, inputs, mode, device) -> dict:
    try:
        return measure(fn, inputs, mode, device)
    except (torch.OutOfMemoryError, RuntimeError) as err:  # a provider that cannot run this: recorded, not fatal
        if device == "cuda":
            torch.cuda.empty_cache()
        for t in inputs.values():
            if isinstance(t, torch.Tensor):
                t.grad = None
        kind = "out of memory" if isinstance(err, torch.OutOfMemoryError) else type(err).__name__
        return dict(median_ms=None, p20_ms=None, p80_ms=None, first_call_ms=None, peak_mem_bytes=None,
                    error=f"{kind}: {str(err).splitlines()[0][:300]}")


def print_table(rows):
    print(f"{'L':>6} {'provider':<24} {'mode':<8} {'median ms':>10} {'p20':>9} {'p80':>9} {'peak MiB':>9} "
          f"{'first ms':>9}")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in sorted(rows, key=lambda r: (r["L"], r["mode"], r["provider"].startswith("floor"), r["provider"])):
        peak = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        print(f"{r['L']:>6} {r['provider']:<24} {r['mode']:<8} {fmt(r['median_ms'], '10.3f')} "
              f"{fmt(r['p20_ms'], '9.3f')} {fmt(r['p80_ms'], '9.3f')} {fmt(peak, '9.0f')} "
              f"{fmt(r['first_call_ms'], '9.0f')}" + (f"  {r['error']}" if "error" in r else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench scan", description=__doc__.split("\n\n")[1])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default: per device, see above)")
    p.add_argument("--out", type=Path, help="JSON file (default: bench/results/scan_<device>.json)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--config", type=json.loads, help="our kernels' tile shapes: JSON with some of CONFIG's keys")
    args = p.parse_args(argv)
    if args.config:
        from hybrid.kernels.selective_scan import triton as ours
        ours.make_cfg(None, args.config)  # checks the keys and values
        ours.CONFIG.update(args.config)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    shape = SHAPES[args.device]
    env = environment(args.device)
    t0 = time.perf_counter()
    rows = [dict(r, device=env["device"], versions=env["versions"], commit=env["commit"])
            for r in run(args.device, args.lengths or shape["lengths"], shape)]
    print_table(rows)
    out = args.out or Path("bench/results") / f"scan_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    shape_json = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in shape.items()}
    if args.device == "cuda":
        from hybrid.kernels.selective_scan.triton import CONFIG
        env["ours_config"] = dict(CONFIG)
    out.write_text(json.dumps({"bench": "scan", "shape": shape_json, **env, "rows": rows}, indent=1) + "\n")
    print(f"{args.device}: {env['device']}; {len(rows)} rows in {time.perf_counter() - t0:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
