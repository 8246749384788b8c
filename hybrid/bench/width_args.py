"""The command-line arguments shared by the benchmarks that time model pieces at one width (blocks, train_step)."""
import argparse
from pathlib import Path

import torch


def width_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser with --device, --d-model, --batch, --length, --threads and --out; `doc`'s first paragraph is its
    description. The caller adds its own arguments."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path)
    return p
