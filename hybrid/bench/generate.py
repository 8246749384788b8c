"""`python -m hybrid.bench generate [--device cuda|cpu]`: generation speed and memory, side by side in one process.

Rows "generate" (per model and batch): the prompt's prefill time, decode tokens/s (new tokens after the first, the
captured step on CUDA), end-to-end tokens/s of `HybridLM.generate` (batch * new / time, prefill included, the
figure mamba-ssm's benchmark reports), the cache's bytes and the peak memory beyond the weights. Models of the same
width and about the same parameters:
    mamba        M x layers                         (a pure Mamba LM, like mamba-ssm's MambaLMHeadModel)
    jamba        MFMFMFAF repeated                  (Jamba's 1:7 attention:Mamba period, MLP every other layer)
    transformer  AF repeated                        (attention with a KV cache + SwiGLU; same width)
plus mamba-ssm's MambaLMHeadModel.generate(cg=True) where mamba-ssm is installed (CUDA).
Rows "decode_vs_prompt": decode ms per token, cache bytes and peak memory after prompts of growing length (mamba,
transformer, batch 1), where the transformer's KV cache grows and Mamba's state does not.

Shapes: CUDA bf16, d_model 1024, 24 Mamba sublayers (~211M parameters with vocab 50280), batch 1/8/64, prompt
2048, 256 new tokens, prompts 1K, 2K, 8K, 32K, 64K for the sweep; CPU (a smoke run, also a test): fp32, tiny.
Rows go to bench/results/generate_<device>.json.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from hybrid.bench.harness import environment, output_path, positive_int, write_rows
from hybrid.inference import graph_for
from hybrid.model import HybridLM

SHAPES = {"cuda": dict(batches=[1, 8, 64], prompt=2048, new=256, vocab=50280, d_model=1024, layers=24,
                       sweep=[1024, 2048, 8192, 32768, 65536], sweep_steps=32, reps=3),
          "cpu": dict(batches=[1, 4], prompt=64, new=16, vocab=256, d_model=64, layers=4,
                      sweep=[64, 256, 1024], sweep_steps=8, reps=2)}


def stacks(layers: int) -> dict[str, str]:
    """Patterns of about equal parameters at one width (per sublayer: Mamba ~6.3 d^2, MLP 8 d^2, attention 4 d^2)."""
    return {"mamba": "M" * layers, "jamba": ("MFMFMFAF" * layers)[:layers],
            "transformer": ("AF" * layers)[:layers]}


def build(pattern: str, args, device, dtype) -> HybridLM:
    heads = max(1, args.d_model // 64)
    torch.manual_seed(0)
    model = HybridLM(args.vocab, args.d_model, pattern, blocks={"A": {"n_heads": heads}}, residual_in_fp32=True)
    return model.to(device=device, dtype=dtype).eval()


def timed(fn, device: str, reps: int) -> tuple[float, object]:
    """Median seconds of `reps` calls of fn (after one untimed call), and the last result."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_beyond(device: str, base: int, fn):
    """fn() and the peak CUDA memory it allocated beyond `base` bytes (None on the CPU)."""
    if device != "cuda":
        return fn(), None
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - base


@torch.no_grad()
def prefill_and_decode(model, prompt, steps: int, device: str, reps: int) -> dict:
    """Prefill time of prompt [batch, L] and the time per decode step (greedy, captured on CUDA) over `steps`."""
    batch, L = prompt.shape
    cache, step = (graph_for(model, batch, L + steps + 1, strict=True) if device == "cuda"
                   else (model.allocate_inference_cache(batch, L + steps + 1), model.step))

    def prefill():
        cache.reset()
        return model(prompt, cache, logits_to_keep=1).logits[:, -1].argmax(-1)

    prefill_s, token = timed(prefill, device, reps)

    def decode():
        cache.reset()
        t = model(prompt, cache, logits_to_keep=1).logits[:, -1].argmax(-1)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            t = step(t, cache).argmax(-1)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    decode_s = statistics.median(decode() for _ in range(reps))
    return dict(prefill_ms=prefill_s * 1e3, decode_ms_per_token=decode_s / steps * 1e3,
                decode_tokens_per_s=batch * steps / decode_s, cache_bytes=cache.nbytes())


def run_model(name, model, args, device, batch) -> dict:
    prompt = torch.randint(0, args.vocab, (batch, args.prompt), device=device)
    model._decoding = None  # the previous batch's graph and cache: not counted in this row's base
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    row = dict(op="generate", provider=name, batch=batch, prompt=args.prompt, new=args.new,
               params=sum(p.numel() for p in model.parameters()), pattern=model.pattern)
    row.update(prefill_and_decode(model, prompt, args.new - 1, device, args.reps))
    (gen_s, _), peak = peak_beyond(device, base, lambda: timed(lambda: model.generate(prompt, args.new), device,
                                                                 args.reps))
    row.update(generate_s=gen_s, generate_tokens_per_s=batch * args.new / gen_s, peak_mem_bytes=peak)
    return row


def sweep_row(name, model, prompt, args, device) -> dict:
    """Decode cost after one prompt; peak_mem_bytes: the peak beyond the weights (cache and prefill included)."""
    model._decoding = None  # the previous length's graph and cache
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    figures, peak = peak_beyond(device, base, lambda: prefill_and_decode(model, prompt, args.sweep_steps, device,
                                                                          args.reps))
    return dict(op="decode_vs_prompt", provider=name, batch=1, prompt=prompt.shape[1], peak_mem_bytes=peak,
                **figures)


def run_mamba_ssm(args, device, dtype, batch) -> dict:
    """mamba-ssm's MambaLMHeadModel.generate(cg=True), the same width, depth and vocabulary, greedy."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    cfg = MambaConfig(d_model=args.d_model, n_layer=args.layers, vocab_size=args.vocab, d_intermediate=0,
                      rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
    torch.manual_seed(0)
    model = MambaLMHeadModel(cfg, device=device, dtype=dtype).eval()
    prompt = torch.randint(0, args.vocab, (batch, args.prompt), device=device)
    base = torch.cuda.memory_allocated()
    run = lambda: model.generate(prompt, max_length=args.prompt + args.new, cg=True, top_k=1,  # noqa: E731
                                 return_dict_in_generate=False)
    (gen_s, _), peak = peak_beyond(device, base, lambda: timed(run, device, args.reps))
    return dict(op="generate", provider="mamba_ssm:MambaLMHeadModel(cg=True)", batch=batch, prompt=args.prompt,
                new=args.new, params=sum(p.numel() for p in model.parameters()), pattern="M" * args.layers,
                generate_s=gen_s, generate_tokens_per_s=batch * args.new / gen_s, peak_mem_bytes=peak)


def guarded(fn, **where) -> dict:
    """fn(), or an error row naming what failed (out of memory, a capture or kernel error): the others go on."""
    try:
        return fn()
    except (torch.OutOfMemoryError, RuntimeError, ImportError) as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        msg = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        print(f"  failed {where}: {msg}", file=sys.stderr)
        return dict(where, error=msg)


def run(args, device: str, save=lambda rows: None) -> list[dict]:
    """Every row; `save(rows so far)` after each model, so that a run cut short keeps what it measured."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for name, pattern in stacks(args.layers).items():
        model = build(pattern, args, device, dtype)
        for batch in args.batches:
            print(f"  {name} batch {batch}", file=sys.stderr)
            rows.append(guarded(lambda m=model, b=batch: run_model(name, m, args, device, b), op="generate", provider=name,
                                batch=batch))
        if name in ("mamba", "transformer"):
            for L in args.sweep:
                prompt = torch.randint(0, args.vocab, (1, L), device=device)
                row = guarded(lambda m=model, p=prompt: sweep_row(name, m, p, args, device), op="decode_vs_prompt",
                              provider=name, batch=1, prompt=L)
                rows.append(row)
        model._decoding = None
        del model
        save(rows)
    if device == "cuda" and args.mamba_ssm:
        for batch in args.batches:
            rows.append(guarded(lambda: run_mamba_ssm(args, device, dtype, batch), op="generate",
                                provider="mamba_ssm:MambaLMHeadModel(cg=True)", batch=batch))
    return rows


def print_table(rows):
    print(f"{'op':<17} {'provider':<38} {'batch':>5} {'prompt':>6} {'prefill ms':>10} {'decode tok/s':>12} "
          f"{'gen tok/s':>10} {'ms/token':>9} {'cache MB':>9}")
    fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"  # noqa: E731
    for r in rows:
        cache = r.get("cache_bytes")
        print(f"{r['op']:<17} {r['provider']:<38} {r['batch']:>5} {r.get('prompt', '-'):>6} "
              f"{fmt(r.get('prefill_ms'), '10.1f')} {fmt(r.get('decode_tokens_per_s'), '12.0f')} "
              f"{fmt(r.get('generate_tokens_per_s'), '10.0f')} {fmt(r.get('decode_ms_per_token'), '9.3f')} "
              f"{fmt(cache / 2**20 if cache else None, '9.1f')}" + (f"  {r['error']}" if "error" in r else ""))


def mamba_ssm_installed() -> bool:
    try:
        import mamba_ssm.utils.generation  # noqa: F401 - the compiled extension loads
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=positive_int, nargs="+", help="default: per device (see above)")
    p.add_argument("--sweep", type=positive_int, nargs="*", help="prompt lengths of the decode-vs-prompt rows")
    for name in ("prompt", "new", "vocab", "d_model", "layers", "sweep_steps", "reps"):
        p.add_argument(f"--{name.replace('_', '-')}", type=positive_int, help="default: per device (see above)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, help="JSON file (default: bench/results/generate_<device>.json, default "
                                            "shapes only)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible to torch", file=sys.stderr)
        return 2
    out = output_path(p, args, "generate", {k: None for k in SHAPES["cuda"]})
    for k, v in SHAPES[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.new < 2:
        p.error(f"--new {args.new}: decode timing needs at least 2 new tokens")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.mamba_ssm = args.device == "cuda" and mamba_ssm_installed()
    env = environment(args.device)
    t0 = time.perf_counter()
    shape = {k: getattr(args, k) for k in SHAPES["cuda"]}
    rows = run(args, args.device, save=lambda rows: write_rows(out, "generate", env, rows, shape=shape))
    print_table(rows)
    write_rows(out, "generate", env, rows, shape=shape)
    print(f"{args.device}: {env['device']}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
