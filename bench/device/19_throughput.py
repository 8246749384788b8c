"""Issue 19 on the GPU: steps/s of `hybrid.train` against a bare PyTorch loop over the same model and batch shape.

    python bench/device/19_throughput.py OUT.jsonl [part ...]    parts: bare, syncs, train (default: all)

Shapes: the demo (model=demo: MAF, d_model 64) and jamba_small (16 sublayers, d_model 128, MoE), both on the
default MQAR task (batch 64, length 64, vocab 64), bf16 autocast as hybrid.train uses on a GPU.
  bare   forward, answer-position cross entropy, backward, clip 1.0, AdamW (PyTorch's default foreach), one fixed
         batch already on the GPU; 300 timed steps after 30 warm-up steps, one synchronize at each end.
  train  hybrid.train's train(cfg) in this process with the progress bar off (as every recipe): the steps from
         50 to 250 timed inside the fit (a synchronize at those two steps only: startup, validation and the
         checkpoint stay outside). Variants: default; progress bar on; AdamW fused; lit.compile (torch.compile
         of the model; and mode reduce-overhead, CUDA graphs); trainer.deterministic=false.
  syncs  hybrid.train (demo) with torch.cuda.set_sync_debug_mode("warn") over steps 60-80: each synchronizing
         call's count and the innermost frames outside torch/lightning that led to it (stdout and OUT.jsonl).
VARIANTS="default,compile" (environment) runs only those variants. Each measurement is appended to OUT.jsonl as soon
as it is taken (a timeout loses only the one in flight).
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only to smoke-test this script (tiny steps)
SHAPES = {"demo": ["model=demo", "task=mqar"], "jamba_small": ["model=jamba_small", "task=mqar"]}
VARIANTS = [  # (shape, variant, extra overrides)
    ("demo", "default", []), ("jamba_small", "default", []),
    ("demo", "fused AdamW", ["+lit.optimizer.fused=true"]),
    ("jamba_small", "fused AdamW", ["+lit.optimizer.fused=true"]),
    ("demo", "progress bar on", ["trainer.enable_progress_bar=true"]),
    ("demo", "compile", ["lit.compile=true"]), ("demo", "compile reduce-overhead", ["lit.compile=reduce-overhead"]),
    ("demo", "not deterministic", ["trainer.deterministic=false"]),
    ("jamba_small", "not deterministic", ["trainer.deterministic=false"]),
    ("jamba_small", "compile", ["lit.compile=true"]),
]


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def config(overrides: list[str], run_dir: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"run_dir={run_dir}"])


def bare_rate(shape: str, steps: int = 300, warmup: int = 30) -> float:
    """Steps/s of a plain loop: the same model, batch and precision as hybrid.train, none of the framework."""
    cfg = config(SHAPES[shape], "/nonexistent")
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(DEVICE)
    task = instantiate(cfg.task)
    x, y = task.generate(seed=0, split="train", step=0, batch_size=int(cfg.data.batch_size),
                         length=int(task.train_length))
    x, y = x.to(DEVICE), y.to(DEVICE)  # [batch, L] each
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            out = model(x)
        logits = out.logits.float()  # [batch, L, vocab]
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100) + 0.01 * out.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start)


def train_rate(shape: str, extra: list[str], steps: int = 250, mark: int = 50) -> float:
    """Steps/s of hybrid.train between steps `mark` and `steps` (timed in the module's on_train_batch_end)."""
    from hybrid import lit
    from hybrid.train import train
    marks = {}
    original = lit.HybridLitModule.on_train_batch_end

    def timed(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.global_step in (mark, steps):
            sync()
            marks[self.global_step] = time.perf_counter()

    lit.HybridLitModule.on_train_batch_end = timed
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            bar = [] if any(e.startswith("trainer.enable_progress_bar") for e in extra) else [
                "trainer.enable_progress_bar=false"]
            train(config([*SHAPES[shape], *extra, *bar, f"trainer.max_steps={steps}",
                          f"trainer.val_check_interval={steps}", f"checkpoint_every={10 * steps}",
                          "data.eval_batches=1"], run_dir))
    finally:
        lit.HybridLitModule.on_train_batch_end = original
    return (steps - mark) / (marks[steps] - marks[mark])


def sync_census(shape: str, first: int = 60, last: int = 80) -> dict[str, int]:
    """Host-device synchronisations inside hybrid.train's steps first..last: where each came from -> count."""
    import traceback
    import warnings
    from collections import Counter

    from hybrid import lit
    from hybrid.train import train
    found, original = Counter(), lit.HybridLitModule.on_train_batch_end

    def watched(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        torch.cuda.set_sync_debug_mode("warn" if first <= self.global_step < last else 0)

    def on_warning(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename
                  and "/lightning" not in f.filename and "warnings" not in f.filename][-3:]
        found[" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))] += 1

    lit.HybridLitModule.on_train_batch_end = watched
    shown, warnings.showwarning = warnings.showwarning, on_warning
    try:
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as run_dir:
            warnings.simplefilter("always")
            warnings.showwarning = on_warning
            train(config([*SHAPES[shape], "trainer.enable_progress_bar=false", f"trainer.max_steps={last + 5}",
                          f"trainer.val_check_interval={last + 5}", "checkpoint_every=1000",
                          "data.eval_batches=1"], run_dir))
    finally:
        torch.cuda.set_sync_debug_mode(0)
        lit.HybridLitModule.on_train_batch_end, warnings.showwarning = original, shown
    return dict(found.most_common(12))


def main(out: str, parts: list[str]) -> None:
    out = Path(out)
    record = lambda row: out.open("a").write(json.dumps(row) + "\n")  # noqa: E731
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    steps, mark, bare_steps = (250, 50, 300) if DEVICE == "cuda" else (6, 2, 3)
    if "bare" in parts:
        for shape in SHAPES:
            rate = bare_rate(shape, bare_steps, warmup=min(30, bare_steps))
            record({"shape": shape, "variant": "bare loop", "steps_per_s": rate, "device": device})
            print(f"{shape:<12} {'bare loop':<24} {rate:8.1f} steps/s", flush=True)
    if "syncs" in parts and DEVICE == "cuda":
        try:
            for where, count in sync_census("demo").items():
                record({"shape": "demo", "variant": "sync census", "where": where, "count": count})
                print(f"sync x{count}: {where}", flush=True)
        except Exception as e:  # the census is a probe: the timings go on without it
            record({"shape": "demo", "variant": "sync census", "error": f"{type(e).__name__}: {e}"[:300]})
    if "train" in parts:
        only = os.environ.get("VARIANTS")  # e.g. VARIANTS="default,not deterministic": those variants only
        for shape, variant, extra in VARIANTS:
            if only and variant not in only.split(","):
                continue
            try:
                rate = train_rate(shape, extra, steps, mark)
            except Exception as e:  # a variant that does not run (e.g. compile) is reported, the others go on
                record({"shape": shape, "variant": variant, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"{shape:<12} {variant:<24} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            record({"shape": shape, "variant": f"hybrid.train {variant}", "steps_per_s": rate, "device": device})
            print(f"{shape:<12} {'hybrid.train ' + variant:<24} {rate:8.1f} steps/s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["bare", "syncs", "train"])
