"""`python -m hybrid.bench.convert [--repeats 3] [--out bench/results/convert_mamba130m_cpu.json]`

Time and peak memory of checkpoint conversion for a ~130M-parameter Mamba (transformers' MambaConfig with
hidden_size=768, num_hidden_layers=24, vocab_size=50280; random weights, float32) on the CPU. Every phase runs
in a fresh process, so that its peak resident memory (RSS, sampled every 2 ms from /proc/self/statm) is its
own; each row (op, provider, mode, x, median_s, p20_s, p80_s, peak MiB, device, versions, commit) gives the
median time and the largest peak over the repeats:

    from_transformers(model)       in-memory MambaForCausalLM -> HybridLM
    from_transformers(dir)         its save_pretrained directory (safetensors) -> HybridLM
    load_checkpoint(ours)          our model.safetensors + hybrid_config.json -> HybridLM
    save_checkpoint                HybridLM -> our checkpoint
    to_transformers(model)         HybridLM -> MambaForCausalLM (in memory)

peak_extra_mib is the peak RSS during the phase minus the RSS just before it (the setup's own model excluded).
Also checks once that the converted model's logits match transformers' (relative error, float32, 1 x 64 tokens),
beside transformers' own float32-vs-float64 error on the same tokens: a random 24-layer stack amplifies rounding,
so two correct float32 implementations differ by about that much (1e-4 here; the 3-layer tests reach 1e-7).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CONFIG = dict(hidden_size=768, num_hidden_layers=24, vocab_size=50280)
PHASES = ("from_transformers(model)", "from_transformers(dir)", "load_checkpoint(ours)", "save_checkpoint",
          "to_transformers(model)")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class PeakRSS:
    """Samples this process's RSS in a thread while the block runs: .before, .peak (MiB)."""

    def __enter__(self):
        self.before = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def hf_model():
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    return transformers.MambaForCausalLM(transformers.MambaConfig(**CONFIG)).eval()


def child(phase: str, work: Path) -> dict:
    """Run one phase after its setup; return its time and memory."""
    import torch

    from hybrid import convert
    torch.set_grad_enabled(False)
    setup = {"from_transformers(model)": hf_model}.get(phase)
    if phase in ("save_checkpoint", "to_transformers(model)"):
        setup = lambda: convert.load_checkpoint(work / "ours")
    if phase == "to_transformers(model)":
        import transformers  # noqa: F401  (its import is not the conversion's cost)
    arg = setup() if setup else None
    run = {"from_transformers(model)": lambda: convert.from_transformers(arg),
           "from_transformers(dir)": lambda: convert.from_transformers(work / "hf"),
           "load_checkpoint(ours)": lambda: convert.load_checkpoint(work / "ours"),
           "save_checkpoint": lambda: convert.save_checkpoint(arg, work / "saved"),
           "to_transformers(model)": lambda: convert.to_transformers(arg)}[phase]
    with PeakRSS() as mem:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_before_mib": mem.before, "peak_mib": mem.peak,
            "peak_extra_mib": mem.peak - mem.before}


def prepare(work: Path) -> dict:
    """Write the transformers directory and our checkpoint; check the logits once."""
    import torch

    from hybrid import convert
    hf = hf_model()
    hf.save_pretrained(work / "hf")
    ours = convert.from_transformers(hf).eval()
    convert.save_checkpoint(ours, work / "ours")
    tokens = torch.randint(0, CONFIG["vocab_size"], (1, 64), generator=torch.Generator().manual_seed(0))
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()
    with torch.no_grad():
        ours_logits, theirs = ours(tokens).logits, hf(tokens).logits
        theirs64 = hf.double()(tokens).logits  # the same model in float64: fp32's own rounding noise at this depth
    return {"n_params": sum(p.numel() for p in ours.parameters()),
            "logits_rel_err": rel(ours_logits, theirs), "transformers_fp32_vs_fp64_rel_err": rel(theirs, theirs64)}


def environment() -> dict:
    import safetensors
    import torch
    import transformers
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "hybrid"], capture_output=True,
                                text=True, check=False).stdout.strip())
    return {"device": f"cpu: {cpu}", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg_1m": os.getloadavg()[0],
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "safetensors": safetensors.__version__},
            "commit": commit + ("-dirty" if dirty else "")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid.bench.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/convert_mamba130m_cpu.json"))
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.work)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        check = prepare(work)
        rows = []
        for phase in PHASES:
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-m", "hybrid.bench.convert", "--child", phase, "--work",
                                      str(work)], capture_output=True, text=True, check=True).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            secs = sorted(r["seconds"] for r in runs)
            q = statistics.quantiles(secs, n=5, method="inclusive") if len(secs) > 1 else [secs[0]] * 4
            rows.append({"op": "convert", "provider": phase, "mode": "cpu", "x": "mamba-130m",
                         "n_params": check["n_params"], "median_s": statistics.median(secs), "p20_s": q[0],
                         "p80_s": q[3], "peak_extra_mib": max(r["peak_extra_mib"] for r in runs),
                         "peak_rss_mib": max(r["peak_mib"] for r in runs), "repeats": len(runs)})
    env = environment()
    rows = [dict(r, device=env["device"], versions=env["versions"], commit=env["commit"]) for r in rows]
    result = {"bench": "convert", "model": {"MambaConfig": CONFIG, **check},
              "fp32_weights_mib": check["n_params"] * 4 / 2 ** 20, **env, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'phase':<26} {'median s':>9} {'p20':>7} {'p80':>7} {'peak extra MiB':>15} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['provider']:<26} {r['median_s']:>9.3f} {r['p20_s']:>7.3f} {r['p80_s']:>7.3f} "
              f"{r['peak_extra_mib']:>15.0f} {r['peak_rss_mib']:>13.0f}")
    print(f"{check['n_params']:,} parameters ({result['fp32_weights_mib']:.0f} MiB fp32); logits rel err vs "
          f"transformers {check['logits_rel_err']:.2e} (their fp32 vs fp64: "
          f"{check['transformers_fp32_vs_fp64_rel_err']:.2e}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
