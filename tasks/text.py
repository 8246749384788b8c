"""Byte-level language modelling: every byte is a token (vocabulary 256), loss reported in bits per byte.

Sources (`source`):
  stdlib  (default) the Python standard library's own top-level modules, `<stdlib>/*.py` in sorted order
          (168 files, 4.7 MB on CPython 3.11): a text corpus every machine has, so `task=text` needs nothing.
          `stdlib_glob="**/*.py"` takes every module of it (1790 files, 32 MB), a corpus for GPU runs.
  files   `paths`: files, folders (every file below, sorted) or glob patterns, read as raw bytes.
  hf      a `datasets` dataset: `load_dataset(hf_path, hf_name, split=hf_split, data_files=hf_data_files,
          revision=hf_revision)`, its `text_column` encoded as UTF-8, one row one document. Online names
          (e.g. hf_path=wikitext hf_name=wikitext-103-raw-v1) download once into datasets' own cache; local
          builders work offline (hf_path=json hf_data_files=my.jsonl).

Documents are packed back to back and windows cross their boundaries (as in enwik8-style byte LM); the
splits are the first 90% / next 5% / last 5% of the packed bytes. `max_bytes` keeps only the first bytes.

Example: `TextConfig(train_length=32, eval_lengths=[32]).generate(seed=0, split="train", step=0,
batch_size=2, length=32)` gives inputs [2, 32] of bytes of Python source and targets [2, 32], the next byte
at every position.
"""
import glob
import logging
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from hybrid.tasks.corpus import CorpusConfig, file_fingerprint

log = logging.getLogger(__name__)
SOURCES = ("stdlib", "files", "hf")


def stdlib_files(pattern: str = "*.py") -> list[Path]:
    """The standard library's files matching `pattern` below its folder ("*.py": the top-level modules;
    "**/*.py": every module, tests included), sorted, never from site-packages or dist-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob(pattern)
                  if p.is_file() and not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))


def expand_paths(paths: list[str]) -> list[Path]:
    """Files named by `paths` (files, folders searched recursively, glob patterns), sorted, without repeats."""
    found = []
    for entry in paths:
        p = Path(entry).expanduser()
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += [f for f in p.rglob("*") if f.is_file()]
        else:
            matches = [Path(m) for m in glob.glob(str(p), recursive=True)]
            if not matches:
                raise FileNotFoundError(f"text path {entry!r} is not a file, folder or glob pattern with matches")
            found += [m for m in matches if m.is_file()]
    if not found:
        raise FileNotFoundError(f"no files under text paths {list(paths)}")
    return sorted({f.resolve() for f in found})


@dataclass(kw_only=True)
class TextConfig(CorpusConfig):
    source: str = "stdlib"  # stdlib | files | hf
    stdlib_glob: str = "*.py"  # source=stdlib: which files ("**/*.py": all of it, 1790 files, 32 MB on 3.11)
    paths: list[str] = field(default_factory=list)  # source=files
    hf_path: str | None = None  # source=hf: load_dataset's first argument (a hub name, or json, text, parquet...)
    hf_name: str | None = None
    hf_split: str = "train"
    hf_data_files: list[str] | None = None
    hf_revision: str | None = None
    text_column: str = "text"
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    train_length: int = 512
    eval_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024])

    kind: ClassVar[str] = "text"
    cross_documents: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        self.paths = [str(p) for p in (self.paths or [])]
        if isinstance(self.hf_data_files, str):
            self.hf_data_files = [self.hf_data_files]
        elif self.hf_data_files is not None:
            self.hf_data_files = [str(p) for p in self.hf_data_files]

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"TextConfig.source={self.source!r}; allowed: {', '.join(SOURCES)}")
        if self.source == "files" and not self.paths:
            raise ValueError("TextConfig.source='files' needs paths (files, folders or glob patterns)")
        if self.source == "hf" and not self.hf_path:
            raise ValueError("TextConfig.source='hf' needs hf_path (a dataset name, or json/text/parquet with "
                             "hf_data_files)")
        super().validate()

    def describe_source(self) -> str:
        if self.source == "hf":
            return f"dataset {self.hf_path}" + (f"/{self.hf_name}" if self.hf_name else "") + f" [{self.hf_split}]"
        return "the Python standard library" if self.source == "stdlib" else f"text files {self.paths}"

    def cache_key(self) -> dict:
        cached = self.__dict__.get("_key")
        if cached is None:
            if self.source == "hf":
                local = [f for f in self.hf_data_files or [] if Path(f).is_file()]
                cached = {"hf": [self.hf_path, self.hf_name, self.hf_split, self.hf_data_files, self.hf_revision,
                                 self.text_column], "local_files": file_fingerprint(local)}
            else:
                files = stdlib_files(self.stdlib_glob) if self.source == "stdlib" else expand_paths(self.paths)
                cached = {"files": file_fingerprint(files)}
            self.__dict__["_key"] = cached
        return cached

    def build(self):
        docs, skipped = [], []
        if self.source == "hf":
            docs = self._hf_documents()
        else:
            for path, _, _ in self.cache_key()["files"]:
                try:
                    docs.append((path, np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)))
                except OSError as err:
                    skipped.append(f"{path} ({type(err).__name__}: {err})")
        return {"all": [d for d in docs if d[1].size]}, skipped

    def _hf_documents(self) -> list[tuple[str, np.ndarray]]:
        from datasets import load_dataset

        ds = load_dataset(self.hf_path, self.hf_name, split=self.hf_split, data_files=self.hf_data_files,
                          revision=self.hf_revision)
        if self.text_column not in ds.column_names:
            raise ValueError(f"TextConfig.text_column={self.text_column!r} is not a column of "
                             f"{self.describe_source()}; its columns: {ds.column_names}")
        docs = []
        for i, text in enumerate(ds[self.text_column]):
            if text:
                docs.append((f"row {i}", np.frombuffer(str(text).encode("utf-8"), dtype=np.uint8)))
        return docs
