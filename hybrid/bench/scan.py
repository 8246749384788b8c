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
`--layouts` (default contiguous and block) times ours and mamba-ssm on the inputs in each memory layout of
hybrid/bench/scan_inputs.py ("block": the feature-major views the Mamba block hands the scan).
Rows are long-format JSON: op, provider, layout, mode, L, median_ms, p20_ms, p80_ms, peak_mem_bytes (CUDA: peak allocated
during one call beyond what was allocated before it; CPU: null), first_call_ms, device, versions, commit.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hybrid.bench.harness import cpu_timing, environment, output_path, positive_int, safe_measure, write_rows
from hybrid.bench.scan_inputs import in_layout, scan_inputs

SHAPES = {
    "cuda": dict(batch=8, dim=2048, N=16, dtype=torch.bfloat16, head_dim=128, lengths=(1024, 4096, 16384, 65536),
                 sequential_max_L=1024, reference_max_L=4096),
    "cpu": dict(batch=1, dim=256, N=16, dtype=torch.float32, head_dim=128, lengths=(64, 256, 1024),
                sequential_max_L=256, reference_max_L=1024),
}
MODES = ("fwd", "fwd+bwd")


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
            rows.append(dict(op="scan", provider=name, layout="contiguous", mode=mode, L=L, median_ms=ms, p20_ms=ms, p80_ms=ms,
                             first_call_ms=None, peak_mem_bytes=None))
    return rows


def run(device, lengths, shape, layouts=("contiguous",), only=None, save=lambda rows: None) -> list[dict]:
    """Rows for every length; `only`: the providers to time (default all); save(rows) after each length."""
    batch, dim, N, dtype, hd = shape["batch"], shape["dim"], shape["N"], shape["dtype"], shape["head_dim"]
    providers = {k: v for k, v in scan_providers(device).items() if only is None or k in only}
    bandwidth, exps = copy_bandwidth(device), exp_rate(device)
    print(f"measured: copy bandwidth {bandwidth / 1e9:.1f} GB/s, exp rate {exps / 1e9:.1f} G/s")
    rows = []
    for L in lengths:
        x = scan_inputs(batch, dim, N, L, dtype, device)
        for layout in layouts:
            xl = in_layout(x, layout) if layout != "contiguous" else x
            for name, fn in providers.items():
                if (name == "sequential" and L > shape["sequential_max_L"]) or (name == "reference" and
                                                                                L > shape["reference_max_L"]):
                    continue
                if layout != "contiguous" and name not in ("ours", "mamba_ssm"):
                    continue
                for mode in MODES:
                    rows.append(dict(op="scan", provider=name, layout=layout, mode=mode, L=L,
                                     **safe_measure(fn, xl, mode, device)))
                    print(f"  L={L} {name} {layout} {mode}: {rows[-1]['median_ms']} ms", file=sys.stderr, flush=True)
            del xl
        a = attention_inputs(batch, dim, L, hd, dtype, device)
        for name, fn in attention_providers(device).items() if only is None or "attention" in only else ():
            for mode in MODES:
                rows.append(dict(op="attention", provider=f"{name} {dim // hd}x{hd}", layout="contiguous", mode=mode, L=L,
                                 **safe_measure(fn, a, mode, device)))
                print(f"  L={L} {name} {mode}: {rows[-1]['median_ms']} ms", file=sys.stderr, flush=True)
        del x, a
        rows += floor_rows(batch, dim, N, L, dtype, bandwidth, exps)
        save(rows)
    return rows


def print_table(rows):
    print(f"{'L':>6} {'provider':<24} {'layout':<13} {'mode':<8} {'median ms':>10} {'p20':>9} {'p80':>9} {'peak MiB':>9} "
          f"{'first ms':>9}")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in sorted(rows, key=lambda r: (r["L"], r["mode"], r["provider"].startswith("floor"), r["provider"],
                                         r["layout"])):
        peak = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        print(f"{r['L']:>6} {r['provider']:<24} {r['layout']:<13} {r['mode']:<8} {fmt(r['median_ms'], '10.3f')} "
              f"{fmt(r['p20_ms'], '9.3f')} {fmt(r['p80_ms'], '9.3f')} {fmt(peak, '9.0f')} "
              f"{fmt(r['first_call_ms'], '9.0f')}" + (f"  {r['error']}" if "error" in r else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench scan", description=__doc__.split("\n\n")[1])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lengths", type=positive_int, nargs="+",
                   help="sequence lengths (default: per device, see above)")
    p.add_argument("--layouts", nargs="+", choices=("contiguous", "block", "channels_last"),
                   default=["contiguous", "block"], help="memory layouts of the inputs (hybrid/bench/scan_inputs.py)")
    p.add_argument("--out", type=Path, help="JSON file (default: bench/results/scan_<device>.json, default shapes only)")
    p.add_argument("--providers", nargs="+", choices=("ours", "reference", "sequential", "mamba_ssm", "attention"),
                   help="time only these (default: all that can run)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
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
    out = output_path(p, args, "scan", dict(lengths=None, config=None, providers=None))
    env = environment(args.device)
    if args.device == "cuda":
        from hybrid.kernels.selective_scan.triton import CONFIG
        env["ours_config"] = dict(CONFIG)
    t0 = time.perf_counter()
    shape_json = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in shape.items()}
    rows = run(args.device, args.lengths or shape["lengths"], shape, args.layouts, args.providers,
               save=lambda rows: write_rows(out, "scan", env, rows, quiet=True, shape=shape_json))
    print_table(rows)
    write_rows(out, "scan", env, rows, shape=shape_json)
    print(f"{args.device}: {env['device']}; {len(rows)} rows in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
