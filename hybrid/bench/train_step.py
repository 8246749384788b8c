"""`python -m hybrid.bench train_step`: training steps per second (forward, backward, AdamW step) of a pure
Mamba, a pure attention and a hybrid stack of about the same size, side by side in one process.
Defaults: d_model 64, batch 64, L 64, vocab 64 (the demo's MQAR shape), the CPU with the reference scan.

Writes long-format rows to bench/results/train_step_<device>.json.
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from hybrid.bench.harness import environment, output_path, write_rows
from hybrid.bench.width_args import WIDTH_DEFAULTS, width_parser
from hybrid.model import HybridLM

STACKS = {"mamba": "MMMM", "attention": "AFAFAF", "hybrid": "MFAFMF", "demo": "MAF"}


def steps_per_second(model, tokens, steps: int, warmup: int = 2) -> list[float]:
    """Seconds of each of `steps` training steps after `warmup` untimed ones. tokens: [batch, L]."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        logits = model(tokens).logits  # [batch, L, vocab]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if tokens.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = width_parser("python -m hybrid.bench train_step", __doc__)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps {args.steps}: at least 2 timed steps are needed for the p20/p80 spread")
    torch.set_num_threads(args.threads)
    out = output_path(p, args, "train_step", WIDTH_DEFAULTS | dict(vocab=64))
    env = environment(args.device)
    tokens = torch.randint(0, args.vocab, (args.batch, args.length),
                           generator=torch.Generator().manual_seed(0)).to(args.device)  # [batch, L]
    rows = []
    for name, pattern in STACKS.items():
        torch.manual_seed(0)
        model = HybridLM(args.vocab, args.d_model, pattern, blocks={"A": {"n_heads": 4}}).to(args.device)
        times = steps_per_second(model, tokens, args.steps)
        med = statistics.median(times)
        quintiles = statistics.quantiles(times, n=5)
        rows.append(dict(op="train_step", provider=name, pattern=pattern, mode="fwd+bwd+adamw", x=args.length,
                         params=sum(t.numel() for t in model.parameters()), median_ms=med * 1e3,
                         p20_ms=quintiles[0] * 1e3, p80_ms=quintiles[3] * 1e3, steps_per_s=1 / med))
    print(f"d_model {args.d_model}, batch {args.batch}, L {args.length}, {env['device']}, {args.threads} threads, "
          f"load {env['load_avg_1m']:.1f}")
    print(f"{'stack':<10} {'pattern':<8} {'params':>9} {'ms/step':>9} {'steps/s':>8}")
    for r in rows:
        print(f"{r['provider']:<10} {r['pattern']:<8} {r['params']:>9,} {r['median_ms']:>9.1f} {r['steps_per_s']:>8.2f}")
    write_rows(out, "train_step", env, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
