"""The command-line arguments shared by the benchmarks that time model pieces at one width (blocks, train_step)."""
import argparse
from pathlib import Path

import torch

from hybrid.bench.harness import positive_int

WIDTH_DEFAULTS = dict(d_model=64, batch=64, length=64)  # the demo's shape: the committed CPU results use it


def width_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser with --device, --d-model, --batch, --length, --threads and --out; `doc`'s first paragraph is its
    description. The caller adds its own arguments. Sizes must be >= 1 (a usage error, exit status 2, otherwise)."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--d-model", type=positive_int, default=WIDTH_DEFAULTS["d_model"])
    p.add_argument("--batch", type=positive_int, default=WIDTH_DEFAULTS["batch"])
    p.add_argument("--length", type=positive_int, default=WIDTH_DEFAULTS["length"])
    p.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, help="JSON file (default: bench/results/<bench>_<device>.json, default "
                   "shapes only)")
    return p
