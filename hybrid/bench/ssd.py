"""`python -m hybrid.bench ssd [--device cpu|cuda] [--lengths ...] [--providers ...] [--ssd-only] [--providers-first]
[--stages L] [--block] [--out bench/results/ssd_<device>.json]`

Mamba-2's SSD side by side in one process, forward ("fwd", inputs requiring grad) and forward + backward
("fwd+bwd"), over sequence lengths L:

    ours:reference   hybrid.kernels.ssd's chunked PyTorch form (autograd)
    ours:triton      our Triton SSD (kernels/ssd/triton.py), CUDA only
    mamba_ssm        mamba-ssm's Triton SSD (mamba_chunk_scan_combined), where installed
    scan:mamba1      our Mamba-1 selective scan (backend auto) over the same width, N 16 (Mamba-1's state size)
    attention        SDPA causal attention of the same width (heads of 128)

CUDA: batch 8, 32 heads x 64 = 2048 channels, N 128, one group, chunk 256, bf16, L in 1K, 4K, 16K, 64K (the
reference up to 4K; SDPA up to 16K: its causal L^2 work at 64K, about 2 s per fwd+bwd call, would take some 40 s of
do_bench for its two backends, more than the run's budget); timings from triton.testing.do_bench. Lengths run in
increasing order and the rows are written after each measurement, so a run cut short keeps what it measured.
CPU: batch 1, 4 heads x 64 = 256 channels, N 64, chunk 64, fp32, L in 64, 256, 1024, timings the median of
perf_counter repeats on one thread (--threads).
--providers keeps the providers whose names start with one of the given words; --ssd-only leaves out the Mamba-1
scan and attention; --providers-first times each SSD provider over all lengths before the next. --stages L adds, at
length L, each SSD provider's fwd+bwd time per GPU kernel (torch.profiler; hybrid/bench/ssd_stages.py). --block adds
the S block beside mamba-ssm's Mamba2 module (hybrid/bench/ssd_block.py).
Rows are long-format JSON (hybrid/bench/harness.py): op, provider, mode, L, median_ms, p20_ms, p80_ms,
first_call_ms, peak_mem_bytes, device, versions, commit.
"""
import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

from hybrid.bench.harness import environment, output_path, positive_int, safe_measure, write_rows
from hybrid.bench.scan import attention_inputs, attention_providers

SHAPES = {
    "cuda": dict(batch=8, heads=32, head_dim=64, N=128, chunk=256, dtype=torch.bfloat16, mamba1_N=16,
                 attn_head_dim=128, lengths=(1024, 4096, 16384, 65536), reference_max_L=4096, attention_max_L=16384),
    "cpu": dict(batch=1, heads=4, head_dim=64, N=64, chunk=64, dtype=torch.float32, mamba1_N=16,
                attn_head_dim=128, lengths=(64, 256, 1024), reference_max_L=1024, attention_max_L=65536),
}
MODES = ("fwd", "fwd+bwd")


def ssd_inputs(batch, L, heads, head_dim, N, dtype, device, seed=0) -> dict:
    """mamba_chunk_scan_combined's arguments (one group, no z), the tensors requiring grad."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        t = torch.randn(*shape, generator=g, device=device) * scale + shift
        return t.to(dtype).requires_grad_(True)
    return dict(x=rand(batch, L, heads, head_dim), dt=rand(batch, L, heads, scale=0.5, shift=-2.0),
                A=(-torch.rand(heads, generator=g, device=device) * 4 - 0.5).requires_grad_(True),
                B=rand(batch, L, 1, N), C=rand(batch, L, 1, N), D=rand(heads).float(),
                dt_bias=rand(heads, scale=0.1).float())


def mamba1_inputs(batch, L, dim, N, dtype, device, seed=0) -> dict:
    """selective_scan's arguments over `dim` channels: u, delta [batch, dim, L]; A [dim, N]; B, C [batch, N, L]."""
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device=device).to(dt).requires_grad_(True)
    return dict(u=rand(batch, dim, L), delta=rand(batch, dim, L), A=(-torch.rand(dim, N, generator=g, device=device)
                                                                     - 0.5).requires_grad_(True),
                B=rand(batch, N, L), C=rand(batch, N, L), D=rand(dim, dt=torch.float32))


def ssd_providers(device: str, chunk: int, keep=None) -> dict:
    """name -> f(ssd inputs) -> y, for the SSD implementations that can run on `device` (and whose names start with
    a word of `keep`, where given)."""
    from hybrid.kernels.ssd import ssd

    opts = dict(chunk_size=chunk, dt_softplus=True)
    out = {"ours:reference": lambda x: ssd(**x, **opts, backend="reference")}
    if device == "cuda":
        out["ours:triton"] = lambda x: ssd(**x, **opts, backend="triton")
    if device == "cuda":
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        except Exception as err:  # noqa: BLE001 - not installed or built for another torch: skip it, say why
            print(f"mamba_ssm: not timed ({type(err).__name__}: {err})", file=sys.stderr)
        else:
            out["mamba_ssm"] = lambda x: mamba_chunk_scan_combined(**x, **opts)
    return {k: v for k, v in out.items() if not keep or any(k.startswith(w) for w in keep)}


def run(device, lengths, shape, save=lambda rows: None, keep=None, ssd_only=False,
        providers_first=False) -> list[dict]:
    """All rows, lengths in increasing order; save(rows) after each measurement. providers_first: each SSD provider
    over every length before the next provider (a provider whose first call is slow, e.g. autotuning, then delays
    only its own rows), the other ops after."""
    batch, heads, hd, N, dtype = shape["batch"], shape["heads"], shape["head_dim"], shape["N"], shape["dtype"]
    dim = heads * hd
    from hybrid.kernels.selective_scan import selective_scan
    rows = []

    def record(op, name, fn, inputs, L):
        for mode in MODES:
            rows.append(dict(op=op, provider=name, mode=mode, L=L, **safe_measure(fn, inputs, mode, device)))
            save(rows)
            print(f"  L={L} {name} {mode}: {rows[-1]['median_ms']} ms", file=sys.stderr, flush=True)

    def others(L):
        """Our Mamba-1 scan and attention at L."""
        m1 = mamba1_inputs(batch, L, dim, shape["mamba1_N"], dtype, device)
        record("scan", f"scan:mamba1 N={shape['mamba1_N']}",
               lambda t: selective_scan(**t, delta_softplus=True), m1, L)
        del m1
        if L > shape["attention_max_L"]:
            print(f"  L={L} attention: skipped (L > {shape['attention_max_L']}, see the module docstring)",
                  file=sys.stderr, flush=True)
            return
        a = attention_inputs(batch, dim, L, shape["attn_head_dim"], dtype, device)
        for name, fn in attention_providers(device).items():
            record("attention", f"{name} {dim // shape['attn_head_dim']}x{shape['attn_head_dim']}", fn, a, L)

    providers = ssd_providers(device, shape["chunk"], keep)
    lengths = sorted(lengths)
    for L, names in ([(L, [n]) for n in providers for L in lengths] if providers_first else
                     [(L, list(providers)) for L in lengths]):
        x = ssd_inputs(batch, L, heads, hd, N, dtype, device)
        for name in names:
            if name != "ours:reference" or L <= shape["reference_max_L"]:
                record("ssd", name, providers[name], x, L)
        del x
        if not (ssd_only or providers_first):
            others(L)
    if providers_first and not ssd_only:
        for L in lengths:
            others(L)
    return rows


def print_table(rows):
    print(f"{'L':>6} {'provider':<28} {'mode':<8} {'median ms':>10} {'p20':>9} {'p80':>9} {'peak MiB':>9}")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in sorted((r for r in rows if r["op"] in ("ssd", "scan", "attention")),
                    key=lambda r: (r["L"], r["mode"], r["op"], r["provider"])):
        peak = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        print(f"{r['L']:>6} {r['provider']:<28} {r['mode']:<8} {fmt(r['median_ms'], '10.3f')} "
              f"{fmt(r['p20_ms'], '9.3f')} {fmt(r['p80_ms'], '9.3f')} {fmt(peak, '9.0f')}"
              + (f"  {r['error']}" if "error" in r else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench ssd", description=__doc__.split("\n\n")[1])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lengths", type=positive_int, nargs="+", help="sequence lengths (default: per device, above)")
    p.add_argument("--out", type=Path, help="JSON file (default: bench/results/ssd_<device>.json, default shapes only)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--providers", nargs="+", help="keep the SSD providers whose names start with these words")
    p.add_argument("--ssd-only", action="store_true", help="leave out the Mamba-1 scan and attention rows")
    p.add_argument("--providers-first", action="store_true",
                   help="each SSD provider over all lengths before the next (a slow first call delays only its rows)")
    p.add_argument("--stages", type=positive_int, metavar="L", help="time each GPU kernel of every SSD provider at L")
    p.add_argument("--block", action="store_true", help="the S block beside mamba-ssm's Mamba2 module")
    p.add_argument("--block-d-model", type=positive_int, help="d_model of --block (default 1024 on CUDA)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    shape = SHAPES[args.device]
    out = output_path(p, args, "ssd", dict(lengths=None, providers=None, ssd_only=False, stages=None, block=False,
                                           block_d_model=None, providers_first=False))
    env = environment(args.device)
    env["mamba_ssm_installed"] = importlib.util.find_spec("mamba_ssm") is not None
    t0 = time.perf_counter()
    shape_json = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v) for k, v in shape.items()}
    save = lambda rows: write_rows(out, "ssd", env, rows, quiet=True, shape=shape_json)  # noqa: E731
    rows = run(args.device, args.lengths or shape["lengths"], shape, save, args.providers, args.ssd_only,
               args.providers_first)
    if args.stages:
        from hybrid.bench.ssd_stages import print_stages, stage_rows
        x = ssd_inputs(shape["batch"], args.stages, shape["heads"], shape["head_dim"], shape["N"], shape["dtype"],
                       args.device)
        providers = ssd_providers(args.device, shape["chunk"], args.providers)
        if args.device == "cuda":
            providers.pop("ours:reference", None)
        rows += stage_rows(providers, x, args.stages, args.device)
        save(rows)
        del x
        print_stages([r for r in rows if r["op"] == "ssd_stage"])
    if args.block:
        from hybrid.bench.ssd_block import block_rows
        rows += block_rows(args.device, args.block_d_model)
        save(rows)
        for r in (r for r in rows if r["op"] == "block"):
            print(f"block {r['provider']:<20} fwd+bwd batch {r['batch']} L {r['L']} d_model {r['d_model']}: "
                  f"{r['median_ms'] if r['median_ms'] is None else round(r['median_ms'], 3)} ms"
                  + (f", peak {r['peak_mem_bytes'] / 2 ** 20:.0f} MiB" if r.get("peak_mem_bytes") else ""))
    print_table(rows)
    write_rows(out, "ssd", env, rows, shape=shape_json)
    print(f"{args.device}: {env['device']}; {len(rows)} rows in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
