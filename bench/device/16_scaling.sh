#!/bin/bash
# Issue 16 (DDP) on 2 GPUs (kind nvidia-h200-x2), from the repo root with .whl carried: `bash bench/device/16_scaling.sh`.
# Training tokens/s of the model bench's jamba stack (hybrid/bench/model.py: MFMFMFAF x 3 = 24 sublayers, d_model
# 1024, vocab 50304, about 200M parameters) through Lightning with our LightningModule and data module: one GPU,
# then DDP and FSDP (conf/trainer/ddp.yaml, fsdp.yaml as composed) on 2 GPUs, each GPU at batch 8 x L 2048 (weak
# scaling: efficiency = tokens/s on 2 GPUs / (2 x tokens/s on 1)); bf16-mixed; 4 warm-up steps, then 12 timed.
# After FSDP: its full-state-dict checkpoint loads strictly into a one-process HybridLM, and the FSDP run resumes
# from it on 2 ranks. gen_ms: generating one rank's data per step (each rank generates the global batch).
# About 3 minutes (5 at most); writes $OUT/scaling.json (rows), $OUT/<config>.log; prints a table last.
source .whl/setup_project.sh || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
WORK=$(mktemp -d)
cat > $WORK/scaling.py <<'EOF'
"""One configuration of the scaling bench (see bench/device/16_scaling.sh); rank 0 appends a row to --out.
BENCH_CPU=1: the model bench's CPU shapes on the CPU (a smoke run of this script, DDP only: no FSDP on the CPU)."""
import argparse
import json
import os
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hybrid.bench.model import SHAPES, STACKS
from hybrid.lit import HybridLitModule
from hybrid.model import HybridLM
from hybrid.tasks.datamodule import TaskDataModule
from hybrid.tasks.mqar import MQARConfig

CPU = os.environ.get("BENCH_CPU") == "1"
SHAPE = SHAPES["cpu" if CPU else "cuda"]
PATTERN = (STACKS["jamba"] * SHAPE["layers"])[:SHAPE["layers"]]


def sync():
    if not CPU:
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Wall time of the steps after `warmup` (CUDA synchronised at both ends)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        sync()
        self.seconds = time.perf_counter() - self.start


def build_model() -> HybridLM:
    return HybridLM(SHAPE["vocab"], SHAPE["d_model"], PATTERN, {"A": {"n_heads": max(1, SHAPE["d_model"] // 64)}},
                    residual_in_fp32=True)


def build_module() -> HybridLitModule:
    return HybridLitModule(build_model(), optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-4, fused=not CPU))


def trainer_for(name: str, devices: int, max_steps: int, callbacks=()) -> L.Trainer:
    strategy = "auto"
    if name != "single":  # the strategy as conf/trainer/<name>.yaml builds it
        with initialize_config_dir(str(Path.cwd() / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"trainer={name}", "run_dir=unused"])
        strategy = instantiate(OmegaConf.to_container(cfg.trainer.strategy, resolve=True))
    return L.Trainer(accelerator="cpu" if CPU else "cuda", devices=devices, strategy=strategy,
                     precision="32-true" if CPU else "bf16-mixed", max_steps=max_steps, limit_val_batches=0,
                     logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     callbacks=list(callbacks), use_distributed_sampler=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", choices=["single", "ddp", "fsdp"], required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt", default=None, help="save a checkpoint there, load it in one process, resume from it")
    args = p.parse_args()
    torch.manual_seed(0)
    task = MQARConfig(vocab_size=SHAPE["vocab"], num_kv_pairs=min(64, SHAPE["length"] // 4),
                      train_length=SHAPE["length"], eval_lengths=[SHAPE["length"]])
    dm = TaskDataModule(task, batch_size=SHAPE["batch"], eval_batches=1, seed=0)
    t0 = time.perf_counter()
    for step in range(3):  # what each rank generates per step: the global batch
        task.generate(seed=0, split="train", step=step, batch_size=args.devices * SHAPE["batch"],
                      length=SHAPE["length"])
    gen_ms = (time.perf_counter() - t0) / 3 * 1e3
    module = build_module()
    n_params = sum(p.numel() for p in module.parameters())
    timer = StepTimer(args.warmup)
    trainer = trainer_for(args.strategy, args.devices, args.warmup + args.steps, [timer])
    trainer.fit(module, datamodule=dm)
    tokens = args.steps * args.devices * SHAPE["batch"] * SHAPE["length"]
    row = {"config": f"{args.strategy} x{args.devices}", "strategy": type(trainer.strategy).__name__,
           "gpus": args.devices, "params": n_params, "tokens_per_s": tokens / timer.seconds,
           "step_ms": timer.seconds / args.steps * 1e3, "gen_ms": gen_ms,
           "peak_mem_gb": 0.0 if CPU else torch.cuda.max_memory_allocated() / 2**30, "pattern": PATTERN, **SHAPE}
    if args.ckpt:
        trainer.save_checkpoint(args.ckpt)  # FSDP state_dict_type full: rank 0 gathers and writes one file
        if trainer.is_global_zero:
            state = torch.load(args.ckpt, map_location="cpu", weights_only=True)["state_dict"]
            single = build_model()
            single.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
            x, _ = task.generate(seed=0, split="val", step=0, batch_size=2, length=min(256, SHAPE["length"]))
            with torch.no_grad():
                row["one_process_load"] = bool(torch.isfinite(single(x).logits).all())
        resumed = trainer_for(args.strategy, args.devices, args.warmup + args.steps + 2)
        resumed.fit(build_module(), datamodule=dm, ckpt_path=args.ckpt, weights_only=True)
        row["resumed_to_step"] = resumed.global_step
    if trainer.is_global_zero:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
EOF
ROWS=$WORK/rows.jsonl
for cfg in "single 1 100" "ddp 2 90" "fsdp 2 110"; do  # strategy, GPUs, time limit (s): at most 5 minutes
  set -- $cfg
  el "$1 x$2"
  extra=""; [ "$1" = fsdp ] && extra="--ckpt $WORK/fsdp.ckpt"
  timeout $3 python3 $WORK/scaling.py --strategy $1 --devices $2 --out $ROWS $extra > $OUT/${1}_x$2.log 2>&1 \
    || { echo "  failed (exit $?):"; tail -5 $OUT/${1}_x$2.log; }
done
el "end"
python3 - $ROWS $OUT/scaling.json <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
base = next((r["tokens_per_s"] for r in rows if r["gpus"] == 1), None)
for r in rows:
    r["efficiency"] = r["tokens_per_s"] / (r["gpus"] * base) if base else None
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(f"{'config':<10} {'tokens/s':>10} {'step ms':>8} {'gen ms':>7} {'mem GB':>7} {'eff':>6}  checks")
for r in rows:
    checks = " ".join(f"{k}={r[k]}" for k in ("one_process_load", "resumed_to_step") if k in r)
    eff = f"{r['efficiency']:.2f}" if r["efficiency"] else "-"
    print(f"{r['config']:<10} {r['tokens_per_s']:>10.0f} {r['step_ms']:>8.1f} {r['gen_ms']:>7.1f} "
          f"{r['peak_mem_gb']:>7.1f} {eff:>6}  {checks}")
print(f"params {rows[0]['params'] / 1e6:.0f}M, per GPU batch {rows[0]['batch']} x L {rows[0]['length']}" if rows else "no rows")
EOF
