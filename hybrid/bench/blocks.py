"""`python -m hybrid.bench blocks`: each block kind's forward and forward+backward at one width, side by side,
and the ratio of every block to the attention block (the M / A ratio decides how fast CPU demos and quick
sweeps of hybrids are). Defaults: d_model 64, batch 64, L 64, the CPU, fp32.

Writes long-format rows to bench/results/blocks_<device>.json.
"""
import sys

import torch

from hybrid.bench.harness import environment, measure, output_path, write_rows
from hybrid.bench.width_args import WIDTH_DEFAULTS, width_parser
from hybrid.blocks import NAMES, build_block

BLOCKS = {"M": {}, "M_lti": {"selective": False}, "A": {"n_heads": 4}, "F": {}, "E": {"n_experts": 8, "top_k": 2}}


def main(argv=None) -> int:
    p = width_parser("python -m hybrid.bench blocks", __doc__)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = output_path(p, args, "blocks", WIDTH_DEFAULTS)
    env = environment(args.device)
    x = torch.randn(args.batch, args.length, args.d_model, device=args.device, requires_grad=True)
    rows = []
    for name, kwargs in BLOCKS.items():
        block = build_block(name[0], args.d_model, **kwargs).to(args.device)
        fn = lambda inputs, block=block: block(inputs["x"])[0]
        for mode in ("fwd", "fwd+bwd"):
            r = measure(fn, {"x": x}, mode, args.device)
            rows.append(dict(op="block", provider=name, block=NAMES[name[0]], mode=mode, x=args.length,
                             d_model=args.d_model, batch=args.batch, **r))
    attention = {r["mode"]: r["median_ms"] for r in rows if r["provider"] == "A"}
    print(f"d_model {args.d_model}, batch {args.batch}, L {args.length}, {env['device']}, "
          f"{args.threads} threads, load {env['load_avg_1m']:.1f}")
    print(f"{'block':<8} {'mode':<8} {'median ms':>10} {'p20':>8} {'p80':>8} {'x attention':>12}")
    for r in rows:
        r["ratio_to_attention"] = r["median_ms"] / attention[r["mode"]]
        print(f"{r['provider']:<8} {r['mode']:<8} {r['median_ms']:>10.2f} {r['p20_ms']:>8.2f} {r['p80_ms']:>8.2f} "
              f"{r['ratio_to_attention']:>12.2f}")
    write_rows(out, "blocks", env, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
