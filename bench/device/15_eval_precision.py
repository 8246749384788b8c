"""Issue 15, induction extrapolation: does evaluating in bf16 (autocast, as every GPU run does) make a trained Mamba
fade at long lengths where fp32 does not? Loads a training run (checkpoints/last.ckpt) and evaluates it on fresh
induction batches at each length, in fp32 and under bf16 autocast, same batches; prints accuracy per length.

    python3 bench/device/15_eval_precision.py RUN_DIR [--lengths 64 256 1024 4096 16384] [--batches 4] [--batch 8]
Runs on CUDA when there is one, else the CPU (bf16 autocast on the CPU too)."""
import argparse
import json

import torch

from hybrid.generate import load_run, run_task_config
from hybrid.lit import answer_stats


@torch.no_grad()
def accuracy(model, task, length, batches, batch, device, bf16) -> float:
    hits = total = 0
    for step in range(batches):
        x, y = task.generate(seed=1234, split="test", step=step, batch_size=batch, length=length)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, correct, answers = answer_stats(model(x).logits, y)
        hits, total = hits + correct.item(), total + answers.item()
    return hits / total


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg = load_run(a.run_dir)
    model = model.to(device).eval()
    task = run_task_config(cfg)
    rows = []
    for L in a.lengths:
        row = {"L": L, **{name: round(accuracy(model, task, L, a.batches, a.batch, device, bf16), 4)
                          for name, bf16 in (("fp32", False), ("bf16", True))}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
