"""`python -m hybrid.bench model [--device cuda|cpu]`: training tokens/s and peak memory of whole language models,
side by side in one process, and the forward(+backward) of each block kind beside mamba-ssm's `Mamba` and `Mamba2`
modules.

Training rows (op "train"): forward + backward + fused AdamW step (bf16 autocast on CUDA, fp32 on the CPU), for
    mamba        M x layers (a pure Mamba LM)           jamba        MFMFMFAF repeated (Jamba's period)
    jamba_moe    MEMFMEAF repeated (MoE every 4th)      transformer  AF repeated (the same width and depth)
    mamba2       S x layers (a pure Mamba-2 LM, as the Mamba-2 paper's; ngroups 1)
    nemotron_h   SFSFSAF repeated (Megatron's M-M-M*-, Nemotron-H's mix: Mamba-2 with ngroups 8, relu^2 MLPs,
                 attention with grouped KV heads and no positional embedding)
each stack with Mamba blocks once per scan backend (--backends, row key scan_backend), each with Mamba-2 blocks
once per SSD backend (--ssd-backends, row key ssd_backend; Mamba-2 headdim 64, d_state 128, chunk 256), plus
mamba-ssm's MambaLMHeadModel of the same width and depth where mamba-ssm is installed (provider
"mamba_ssm:MambaLMHeadModel", no causal-conv1d package). --stacks picks some stacks.
tokens_per_s = batch * L / median step time; peak_mem_bytes: the peak allocated during the timed steps (weights,
AdamW state and activations); first_call_ms: the first step, which holds Triton's compilation, reported apart.
Block rows (op "block"): each mixer alone (M per scan backend, S per SSD backend, A, F, E, and where mamba-ssm is
installed its Mamba, and its Mamba2 with the SSD backend mamba_ssm: without the fused conv path, use_mem_eff_path=False,
which needs causal-conv1d) at batch x L x d_model, fwd and fwd+bwd, timed by hybrid.bench.harness.measure.

Shapes: CUDA batch 8 x L 2048, vocab 50304, d_model 1024, 24 sublayers, 6 timed steps; CPU (a smoke run, also
a test): batch 2 x L 32, vocab 256, d_model 32, 8 sublayers, 2 timed steps. Rows go to
bench/results/model_<device>.json.
"""
import argparse
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hybrid.bench.harness import environment, output_path, positive_int, safe_measure, write_rows
from hybrid.blocks import MIXERS
from hybrid.model import HybridLM

STACKS = {"mamba": "M", "jamba": "MFMFMFAF", "jamba_moe": "MEMFMEAF", "transformer": "AF", "mamba2": "S",
          "nemotron_h": "SFSFSAF"}
SHAPES = {"cuda": dict(batch=8, length=2048, vocab=50304, d_model=1024, layers=24, steps=6),
          "cpu": dict(batch=2, length=32, vocab=256, d_model=32, layers=8, steps=2)}
MOE = {"n_experts": 8, "top_k": 2}
BLOCK_KINDS = ("M", "S", "A", "F", "E")


def mamba_ssm_installed() -> bool:
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401 - the compiled extension loads
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    return True


def mamba_ssd_installed() -> bool:
    try:
        import mamba_ssm.modules.mamba2  # noqa: F401 - mamba-ssm's Triton SSD and its Mamba2 module
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    return True


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)


def train_steps(model, tokens, steps: int, device: str) -> dict:
    """First step (compilation) and `steps` timed steps of forward, cross-entropy (+ MoE aux loss), backward, AdamW.
    tokens: [batch, L]."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with autocast(device):
            out = model(tokens)
            logits = out.logits  # [batch, L, vocab]
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
            if getattr(out, "aux_loss", None) is not None:
                loss = loss + 0.01 * out.aux_loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    sync()
    first = (time.perf_counter() - t0) * 1e3
    step()  # one more untimed (allocator and autotuning settle)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=5, method="inclusive")
    med = statistics.median(times)
    return dict(median_ms=med, p20_ms=q[0], p80_ms=q[3], first_call_ms=first,
                tokens_per_s=tokens.numel() / (med * 1e-3),
                peak_mem_bytes=torch.cuda.max_memory_allocated() if device == "cuda" else None)


def mamba2_options(d_model: int, backend: str | None, ngroups: int = 1) -> dict:
    """The S block's options at this width: headdim 64 (less where 2 * d_model is not a multiple of 64, so the tiny
    CPU shapes build), ngroups a divisor of the heads."""
    headdim = math.gcd(64, 2 * d_model)
    return {"ssd_backend": backend or "auto", "headdim": headdim, "ngroups": math.gcd(ngroups, 2 * d_model // headdim)}


def stack_blocks(name: str, d_model: int, scan_backend: str | None, ssd_backend: str | None) -> dict:
    """Per-symbol block options of one training stack."""
    heads = max(1, d_model // 64)
    if name == "nemotron_h":
        return {"A": {"n_heads": heads, "n_kv_heads": math.gcd(heads, 8), "rope_base": None},
                "F": {"activation": "relu2"}, "S": mamba2_options(d_model, ssd_backend, ngroups=8)}
    return {"A": {"n_heads": heads}, "E": MOE, "M": {"scan_backend": scan_backend or "auto"},
            "S": mamba2_options(d_model, ssd_backend)}


def models(args, backends, ssd_backends, with_mamba_ssm):
    """(provider, scan backend or None, SSD backend or None, pattern, builder) for every training row."""
    for name in args.stacks:
        pattern = (STACKS[name] * args.layers)[:args.layers]
        for backend in (backends if "M" in pattern else [None]):
            for ssd_backend in (ssd_backends if "S" in pattern else [None]):
                blocks = {s: o for s, o in stack_blocks(name, args.d_model, backend, ssd_backend).items()
                          if s in pattern}
                yield name, backend, ssd_backend, pattern, lambda p=pattern, b=blocks: HybridLM(
                    args.vocab, args.d_model, p, b, residual_in_fp32=True)
    if with_mamba_ssm and "mamba" in args.stacks:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        cfg = MambaConfig(d_model=args.d_model, n_layer=args.layers, vocab_size=args.vocab, d_intermediate=0,
                          rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
        yield "mamba_ssm:MambaLMHeadModel", "mamba_ssm", None, "M" * args.layers, lambda: MambaLMHeadModel(cfg)


def block_modules(args, backends, ssd_backends, with_mamba_ssm):
    """(provider, module) for the block rows of the kinds in args.blocks: each of our mixers, and mamba-ssm's Mamba
    (with M) and Mamba2 (with S)."""
    kinds = set(args.blocks)
    if "M" in kinds:
        yield from ((f"M scan={b}", MIXERS["M"](args.d_model, scan_backend=b)) for b in backends)
    if "S" in kinds:
        yield from ((f"S ssd={b}", MIXERS["S"](args.d_model, **mamba2_options(args.d_model, b)))
                    for b in ssd_backends)
    if "A" in kinds:
        yield "A", MIXERS["A"](args.d_model, n_heads=max(1, args.d_model // 64))
    if "F" in kinds:
        yield "F", MIXERS["F"](args.d_model)
    if "E" in kinds:
        yield "E", MIXERS["E"](args.d_model, **MOE)
    if with_mamba_ssm and "M" in kinds:
        from mamba_ssm.modules.mamba_simple import Mamba
        yield "mamba_ssm:Mamba", Mamba(args.d_model)
    if "mamba_ssm" in ssd_backends and "S" in kinds:  # pure Triton: runs without mamba-ssm's compiled extension
        from mamba_ssm.modules.mamba2 import Mamba2
        # the same options as our S row; the fused path (use_mem_eff_path) needs the causal-conv1d package
        yield "mamba_ssm:Mamba2", Mamba2(args.d_model, headdim=math.gcd(64, 2 * args.d_model), use_mem_eff_path=False)


def free(device):
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def run(args, backends, ssd_backends, with_mamba_ssm, save=lambda rows: None) -> list[dict]:
    """All rows; save(rows) after each one (a run cut short keeps what it measured)."""
    device, rows = args.device, []
    tokens = torch.randint(0, args.vocab, (args.batch, args.length),
                           generator=torch.Generator().manual_seed(0)).to(device)  # [batch, L]
    common = dict(x=args.length, batch=args.batch, d_model=args.d_model)
    for provider, backend, ssd_backend, pattern, build in models(args, backends, ssd_backends, with_mamba_ssm):
        torch.manual_seed(0)
        row = dict(op="train", provider=provider, scan_backend=backend, ssd_backend=ssd_backend, pattern=pattern,
                   mode="fwd+bwd+adamw", layers=args.layers, vocab=args.vocab, **common)
        try:
            model = build().to(device)
            row["params"] = sum(p.numel() for p in model.parameters())
            row.update(train_steps(model, tokens, args.steps, device))
        except (torch.OutOfMemoryError, RuntimeError) as err:
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        model = None
        free(device)
        rows.append(row)
        save(rows)
        print(f"  {provider} scan={backend} ssd={ssd_backend}: {row.get('tokens_per_s', row.get('error'))}",
              file=sys.stderr, flush=True)
    if args.no_blocks:
        return rows
    x = torch.randn(args.batch, args.length, args.d_model, device=device, requires_grad=True)
    for provider, module in block_modules(args, backends, ssd_backends, with_mamba_ssm):
        module = module.to(device)

        def fn(inputs, module=module):
            with autocast(device):
                y = module(inputs["x"])
            return y[0] if isinstance(y, tuple) else y
        for mode in ("fwd", "fwd+bwd"):
            rows.append(dict(op="block", provider=provider, mode=mode, **common,
                             **safe_measure(fn, {"x": x}, mode, device)))
        module = None
        free(device)
        save(rows)
    return rows


def print_table(rows):
    fmt = lambda v, f: "-" if v is None else format(v, f)
    print(f"{'op':<6} {'provider':<28} {'scan':<10} {'ssd':<10} {'mode':<14} {'median ms':>10} {'tokens/s':>10} "
          f"{'peak MiB':>9} {'first ms':>9}")
    for r in rows:
        peak = None if r.get("peak_mem_bytes") is None else r["peak_mem_bytes"] / 2 ** 20
        print(f"{r['op']:<6} {r['provider']:<28} {str(r.get('scan_backend') or '-'):<10} "
              f"{str(r.get('ssd_backend') or '-'):<10} {r['mode']:<14} "
              f"{fmt(r.get('median_ms'), '10.2f')} {fmt(r.get('tokens_per_s'), '10.0f')} {fmt(peak, '9.0f')} "
              f"{fmt(r.get('first_call_ms'), '9.0f')}" + (f"  {r['error']}" if "error" in r else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench model", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    for name in ("batch", "length", "vocab", "d_model", "layers", "steps"):
        p.add_argument(f"--{name.replace('_', '-')}", type=positive_int, help="default: per device (see above)")
    p.add_argument("--backends", nargs="+", choices=("auto", "triton", "mamba_ssm", "reference"),
                   help="scan backends of the Mamba stacks (default: CUDA triton and mamba_ssm where installed; "
                        "CPU reference)")
    p.add_argument("--ssd-backends", nargs="+", choices=("auto", "triton", "mamba_ssm", "reference"),
                   help="SSD backends of the Mamba-2 stacks and S block rows (default: CUDA reference, triton and "
                        "mamba_ssm where installed; CPU reference)")
    p.add_argument("--stacks", nargs="+", choices=tuple(STACKS), default=list(STACKS),
                   help="training stacks to run (default: all)")
    p.add_argument("--no-blocks", action="store_true", help="skip the block rows")
    p.add_argument("--blocks", nargs="+", choices=BLOCK_KINDS, default=list(BLOCK_KINDS),
                   help="block rows of these kinds only (M with mamba-ssm's Mamba, S with its Mamba2; default: all)")
    p.add_argument("--config", type=json.loads, help="our scan kernels' tile shapes: JSON with some of CONFIG's keys")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path,
                   help="JSON file (default: bench/results/model_<device>.json, default shapes only)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    out = output_path(p, args, "model", dict(batch=None, length=None, vocab=None, d_model=None, layers=None,
                                             steps=None, backends=None, ssd_backends=None, config=None,
                                             stacks=list(STACKS), blocks=list(BLOCK_KINDS)))
    for k, v in SHAPES[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.threads:
        torch.set_num_threads(args.threads)
    with_mamba_ssm = args.device == "cuda" and mamba_ssm_installed()
    backends = args.backends or (["triton"] + ["mamba_ssm"] * with_mamba_ssm if args.device == "cuda"
                                 else ["reference"])
    ssd_backends = args.ssd_backends or (["reference", "triton"] + ["mamba_ssm"] * mamba_ssd_installed()
                                         if args.device == "cuda" else ["reference"])
    if args.config:
        from hybrid.kernels.selective_scan import triton as ours
        ours.make_cfg(None, args.config)  # checks the keys and values
        ours.CONFIG.update(args.config)
    env = environment(args.device)
    shape = {k: getattr(args, k) for k in SHAPES["cuda"]}
    t0 = time.perf_counter()
    rows = run(args, backends, ssd_backends, with_mamba_ssm,
               save=lambda rows: write_rows(out, "model", env, rows, shape=shape, quiet=True))
    print_table(rows)
    write_rows(out, "model", env, rows, shape=shape)
    print(f"{args.device}: {env['device']}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
