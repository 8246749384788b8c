"""`python -m hybrid.convert SRC OUT_DIR [--to hybrid|transformers] [--dtype float32|bfloat16|keep]`

SRC is a local checkpoint directory: transformers (Mamba, Jamba), mamba-ssm, or ours. `--to hybrid` (the
default) writes our checkpoint (model.safetensors + hybrid_config.json), which `model=from_checkpoint
model.path=OUT_DIR` loads; `--to transformers` writes a save_pretrained directory that from_pretrained loads.

Exit status: 0 converted; 2 a usage error (no checkpoint at SRC, an architecture or setting we cannot express,
a bad option); 1 a checkpoint that cannot be read (truncated or corrupt files, bad JSON). Either is one
paragraph on stderr naming the file, without a traceback.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from safetensors import SafetensorError

from hybrid.convert.checkpoint import CONFIG_NAME, load_checkpoint, save_checkpoint
from hybrid.convert.links import ConversionError
from hybrid.convert.specs import UnsupportedConfig

DTYPES = ("float32", "bfloat16", "float16", "keep")


def source_format(src: Path) -> str:
    if (src / CONFIG_NAME).exists():
        return "hybrid"
    try:
        cfg = json.loads((src / "config.json").read_text()) if (src / "config.json").exists() else {}
    except (OSError, ValueError):
        return "unknown"
    return cfg.get("model_type", "mamba-ssm" if "d_model" in cfg else "unknown")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid.convert", description=__doc__.split("\n\n")[1])
    parser.add_argument("src", type=Path, help="checkpoint directory (transformers, mamba-ssm or ours)")
    parser.add_argument("out_dir", type=Path, help="output directory (created)")
    parser.add_argument("--to", choices=("hybrid", "transformers"), default="hybrid")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="the parameters' dtype (keep: as stored)")
    args = parser.parse_args(argv)
    try:
        return convert(args)
    except (FileNotFoundError, UnsupportedConfig) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ConversionError, OSError, ValueError, KeyError, SafetensorError) as e:
        print(f"error: cannot read checkpoint {args.src}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def convert(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    model = load_checkpoint(args.src, dtype=None if args.dtype == "keep" else args.dtype)
    loaded = time.perf_counter()
    if args.to == "hybrid":
        save_checkpoint(model, args.out_dir, source={"path": str(args.src.resolve()),
                                                     "format": source_format(args.src)})
    else:
        from hybrid.convert.hf import to_transformers
        to_transformers(model, args.out_dir)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.src} ({source_format(args.src)}) -> {args.out_dir} ({args.to}): pattern {model.pattern}, "
          f"{n:,} parameters; load {loaded - start:.2f} s, write {time.perf_counter() - loaded:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
