"""Reading a checkpoint directory's tensors lazily: safetensors (single or sharded) or pickled .bin files.

Safetensors headers are checked against the file size before anything is read, so a truncated or corrupted
file is reported with the names of the tensors it lost. Pickled files are read with `weights_only=True`.
"""
from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from hybrid.convert.links import ConversionError, TensorSource

# bytes per element of each safetensors dtype
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
             "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")


def safetensors_header(path: Path) -> dict:
    """The checked header of a .safetensors file: {name: {"dtype", "shape", "data_offsets"}}.

    Raises ConversionError naming the file and every tensor whose bytes lie past the end of a truncated
    file, or whose byte range does not match its dtype and shape.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"reading {path}", [f"file is {size} bytes: too short for a safetensors header"])
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ConversionError(f"reading {path}", [(f"truncated: the header claims {n} bytes but the file "
                                                       f"has {size} bytes in all; no tensor can be read")])
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConversionError(f"reading {path}", [f"corrupted header (not JSON): {e}"]) from None
    if not isinstance(header, dict):
        raise ConversionError(f"reading {path}", ["corrupted header: not a JSON object"])
    header.pop("__metadata__", None)
    data = size - 8 - n
    problems = []
    for name, info in header.items():
        try:
            start, end = info["data_offsets"]
            want = math.prod(info["shape"]) * _ITEMSIZE[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            problems.append(f"corrupted header entry for tensor {name!r}: {info!r}")
            continue
        if end > data:
            problems.append(f"truncated: tensor {name!r} {info['shape']} needs bytes {start}..{end} of the data "
                            f"but the file holds only {data}")
        elif end - start != want:
            problems.append(f"corrupted: tensor {name!r} {info['dtype']} {info['shape']} needs {want} bytes, "
                            f"its header entry gives {end - start}")
    if problems:
        raise ConversionError(f"reading {path} ({size} bytes)", problems)
    return header


class FileSource(TensorSource):
    """The tensors of one or more safetensors / .bin files (the shards of one checkpoint)."""

    def __init__(self, files: list[Path], origin: str):
        from safetensors import safe_open
        self.origin, self.where, self._shapes = origin, {}, {}
        self._open, self._loaded = {}, {}
        for path in files:
            if path.suffix == ".safetensors":
                for name, info in safetensors_header(path).items():
                    self._add(name, path, tuple(info["shape"]))
                self._open[path] = safe_open(str(path), framework="pt")
            else:
                state = _load_bin(path)
                self._loaded[path] = state
                for name, t in state.items():
                    self._add(name, path, tuple(t.shape))

    def _add(self, name: str, path: Path, shape: tuple):
        if name in self.where:
            raise ConversionError(f"reading {self.origin}",
                                  [f"tensor {name!r} is in both {self.where[name]} and {path}"])
        self.where[name], self._shapes[name] = path, shape

    def keys(self) -> list[str]:
        return list(self.where)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def get(self, key: str) -> torch.Tensor:
        path = self.where[key]
        if path in self._open:
            return self._open[path].get_tensor(key)
        return self._loaded[path][key]


def _load_bin(path: Path) -> dict:
    """A pickled state dict, read with weights_only=True (no code runs); memory-mapped when it is a zip-format
    file (torch >= 1.6), since mmap cannot read the legacy format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:  # a damaged file
        raise ConversionError(f"reading {path} ({path.stat().st_size} bytes)", [
            f"not a readable PyTorch checkpoint (truncated or corrupted?): {type(e).__name__}: {e}"]) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)] if isinstance(state, dict) else None
    if bad is None or bad:
        raise ConversionError(f"reading {path}", [f"expected a dict of tensors; non-tensor entries: {bad}"])
    return state


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, shards resolved through their index, by the usual names
    (model.safetensors[.index.json], pytorch_model.bin[.index.json]); an error listing what is there otherwise."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.exists():
            continue
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConversionError(f"reading {path}", [f"not a shard index with a weight_map: {e}"]) from None
            shards = sorted({directory / f for f in weight_map.values()})
            absent = [str(s) for s in shards if not s.exists()]
            if absent:
                raise ConversionError(f"reading {path}", [f"missing shard file {s}" for s in absent])
            return shards
        return [path]
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise FileNotFoundError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}; "
                            f"found {present}")


def open_weights(directory: str | Path) -> FileSource:
    directory = Path(directory)
    return FileSource(weight_files(directory), origin=str(directory))
