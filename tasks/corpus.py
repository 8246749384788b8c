"""Real data as a task: a byte-token corpus cached as Arrow, split, and served as random windows.

A corpus is a list of documents (audio files, text files, dataset rows), each a uint8 token array; tokens are
bytes, so the loss in nats per token divided by ln 2 is bits per byte. `CorpusConfig` (a TaskConfig) builds it
once, saves it with `datasets`' `save_to_disk` under `cache_dir/<kind>-<hash>` (the hash covers everything that
changes the tokens: the source, its files' sizes and modification times, the sample rate...) and memory-maps it
on later runs, so every point of a sweep shares one copy. A file lock makes concurrent runs build it once.

Splits: the documents (in name order, or shuffled with a fixed seed when `shuffle_documents`) are laid end to
end and cut at fractions: the first 1 - val_fraction - test_fraction of the tokens train, then validation, then
test; a document straddling a cut becomes two. Where the source has its own splits (an audio folder with
train/, validation/, test/) those are used instead.

Windows: a batch is `batch_size` windows of length + 1 tokens at uniformly random valid starts, inputs the first
`length` tokens and targets the next token at every position ([batch, length] int64 each, no ignored targets).
Audio windows stay inside one file (`cross_documents = False`); text windows are packed across documents.
Training windows follow (seed, "train", step). Validation and test windows ignore the run's seed (they follow
(0, split, batch index)), so every seed of a sweep is measured on the same samples; and every evaluation length
scores the same samples too: a batch holds windows of the longest evaluation length, cut into rows of the
length asked for (a batch of L=256 rows from 1024-long windows has 4x the rows). Lengths that divide the
longest compare exactly; the differences between them are then context alone, not which audio was drawn.
"""
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from hybrid.tasks.base import TaskConfig, check_batch_size, check_unknown_kwargs, rng_for

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the stored layout or the tokenisation changes: old caches are then ignored
SPLITS = ("train", "validation", "test")
BAD_FILE_POLICIES = ("error", "skip")


@contextmanager
def quiet_datasets():
    """datasets' progress bars off for the duration (they would fill a run's log with one-line bars)."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def default_cache_dir() -> Path:
    """$HYBRID_DATA_CACHE, else ~/.cache/hybrid/data."""
    return Path(os.environ.get("HYBRID_DATA_CACHE") or Path.home() / ".cache" / "hybrid" / "data")


@dataclass
class TokenCorpus:
    """Documents back to back: tokens [N] uint8 and bounds [D + 1] int64 (document d is tokens[bounds[d]:bounds[d+1]])."""
    tokens: np.ndarray
    bounds: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.bounds)  # [D]

    def __len__(self) -> int:
        return int(self.tokens.size)

    def slice(self, lo: int, hi: int) -> "TokenCorpus":
        """Tokens lo..hi (positions in the concatenation), cutting documents at the ends."""
        inner = self.bounds[(self.bounds > lo) & (self.bounds < hi)]
        bounds = np.concatenate([[lo], inner, [hi]]).astype(np.int64) - lo
        return TokenCorpus(self.tokens[lo:hi], bounds)

    def reorder(self, order: np.ndarray) -> "TokenCorpus":
        """Documents in the given order (a permutation of 0..D-1)."""
        pieces = [self.tokens[self.bounds[d]:self.bounds[d + 1]] for d in order]
        lengths = self.lengths[order]
        tokens = np.concatenate(pieces) if pieces else self.tokens[:0]
        return TokenCorpus(tokens, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def window_starts(self, span: int, cross_documents: bool) -> tuple[np.ndarray, np.ndarray]:
        """Valid windows of `span` tokens, as (cumulative counts [D + 1], document offsets [D]): window u lies in
        document d with cum[d] <= u < cum[d + 1], starting at offsets[d] + u - cum[d]."""
        if cross_documents:
            count = max(0, len(self) - span + 1)
            return np.array([0, count], dtype=np.int64), np.zeros(1, dtype=np.int64)
        counts = np.maximum(0, self.lengths - span + 1)  # [D]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.bounds[:-1]


def sample_windows(corpus: TokenCorpus, generator: torch.Generator, batch_size: int, length: int,
                   cross_documents: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows -> (inputs [batch_size, length], targets [batch_size, length]) int64, targets[:, t] =
    inputs[:, t + 1] within the window (the next token)."""
    span = int(length) + 1
    cum, offsets = corpus.window_starts(span, cross_documents)
    total = int(cum[-1])
    if total < 1:
        raise ValueError(f"no window of {span} tokens fits (longest piece: {corpus.lengths.max(initial=0)})")
    u = torch.randint(total, (batch_size,), generator=generator).numpy()  # [batch] window numbers
    doc = np.searchsorted(cum, u, side="right") - 1  # [batch]
    starts = offsets[doc] + (u - cum[doc])  # [batch]
    windows = corpus.tokens[starts[:, None] + np.arange(span)[None, :]]  # [batch, span] uint8
    windows = torch.from_numpy(windows.astype(np.int64))
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


# -- the Arrow cache ------------------------------------------------------------------------------------------
def _save(path: Path, names: list[str], arrays: list[np.ndarray], meta: dict) -> None:
    """Write documents as a datasets Dataset (columns name: string, tokens: large_list<uint8>) at `path`."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    values = pa.array(np.concatenate(arrays) if arrays else np.zeros(0, np.uint8), type=pa.uint8())
    table = pa.table({"name": pa.array(names, type=pa.string()),
                      "tokens": pa.LargeListArray.from_arrays(offsets, values)})  # no per-row Python conversion
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_datasets():
        Dataset(InMemoryTable(table)).save_to_disk(str(tmp))
    (tmp / "corpus.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, path)  # readers see a complete directory or none


def _load(path: Path) -> tuple[dict[str, TokenCorpus], dict]:
    """The stored documents by split ("all", or the source's own split names) and the stored metadata."""
    import pyarrow.compute as pc
    from datasets import load_from_disk

    meta = json.loads((path / "corpus.json").read_text())
    ds = load_from_disk(str(path))
    column = ds.data.column("tokens")  # ChunkedArray of large_list<uint8>, memory-mapped
    tokens = np.concatenate([c.flatten().to_numpy() for c in column.chunks]) if column.num_chunks else np.zeros(0, np.uint8)
    lengths = np.concatenate([pc.list_value_length(c).to_numpy() for c in column.chunks]).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    parts = {}
    for split, (lo, hi) in meta["split_documents"].items():  # document ranges per split
        parts[split] = TokenCorpus(tokens[bounds[lo]:bounds[hi]], bounds[lo:hi + 1] - bounds[lo])
    return parts, meta


def key_hash(key: dict) -> str:
    return hashlib.blake2b(json.dumps(key, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def file_fingerprint(paths: Iterable[Path]) -> list:
    """(path, size, mtime_ns) per file: a changed or replaced file gives a new cache entry."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


# -- the task config ------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class CorpusConfig(TaskConfig):
    """What audio and text share. Subclasses set `kind` and `cross_documents` and implement `cache_key` and
    `build` (the documents by split, the skipped files)."""
    vocab_size: int = 256  # bytes
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    shuffle_documents: bool = False  # permute documents (fixed seed) before cutting the splits
    on_bad_file: str = "error"  # error: stop, naming the file | skip: leave it out, with a warning naming it
    cache_dir: str | None = None  # null: $HYBRID_DATA_CACHE or ~/.cache/hybrid/data
    max_bytes: int | None = None  # keep only the first max_bytes tokens of the (shuffled) corpus before splitting

    kind: ClassVar[str] = "corpus"
    cross_documents: ClassVar[bool] = True
    bytes_per_token: ClassVar[float] = 1.0  # bits per byte = loss / ln 2

    # -- what subclasses implement --------------------------------------------------------------------------
    def cache_key(self) -> dict:
        raise NotImplementedError

    def build(self) -> tuple[dict[str, list[tuple[str, np.ndarray]]], list[str]]:
        """{split: [(name, tokens uint8 [n]), ...]} with split "all" or the source's own splits, and the files
        that could not be read, as "name (reason)". Never raises for one bad file: `on_bad_file` decides later,
        so that the cache serves both policies."""
        raise NotImplementedError

    def describe_source(self) -> str:
        return self.kind

    # -- shared ---------------------------------------------------------------------------------------------
    def cache_root(self) -> Path:
        return Path(self.cache_dir or default_cache_dir()).expanduser()

    def corpus_path(self) -> Path:
        key = {"kind": self.kind, "format": FORMAT_VERSION, **self.cache_key()}
        return self.cache_root() / f"{self.kind}-{key_hash(key)}"

    def _stored(self) -> tuple[dict[str, TokenCorpus], dict]:
        from filelock import FileLock  # a dependency of datasets

        path = self.corpus_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not (path / "corpus.json").exists():
                log.info("building the %s corpus at %s", self.describe_source(), path)
                by_split, skipped = self.build()
                if not any(by_split.values()):  # nothing to store: say why, cache nothing
                    listing = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
                    raise ValueError(f"no readable documents in {self.describe_source()}"
                                     + (f": {listing}" if listing else ""))
                names, arrays, ranges = [], [], {}
                for split, docs in by_split.items():
                    ranges[split] = [len(names), len(names) + len(docs)]
                    names += [n for n, _ in docs]
                    arrays += [a for _, a in docs]
                _save(path, names, arrays, {"key": self.cache_key(), "skipped": skipped, "split_documents": ranges,
                                            "documents": len(names), "tokens": int(sum(a.size for a in arrays))})
        return _load(path)

    def splits(self) -> dict[str, TokenCorpus]:
        """{"train", "validation", "test"} -> TokenCorpus, built or read once per config object."""
        cached = self.__dict__.get("_splits")
        if cached is not None:
            return cached
        parts, meta = self._stored()
        if meta["skipped"]:
            listing = ", ".join(meta["skipped"][:10]) + (" ..." if len(meta["skipped"]) > 10 else "")
            if self.on_bad_file == "error":
                raise ValueError(f"{len(meta['skipped'])} unreadable file(s) in {self.describe_source()}: {listing}; "
                                 f"set on_bad_file=skip to leave them out")
            log.warning("left out %d unreadable file(s): %s", len(meta["skipped"]), listing)
        if set(parts) >= set(SPLITS):
            splits = {s: parts[s] for s in SPLITS}
        else:
            whole = parts["all"]
            if self.shuffle_documents:
                whole = whole.reorder(np.random.default_rng(0).permutation(len(whole.lengths)))
            if self.max_bytes is not None:
                whole = whole.slice(0, min(len(whole), int(self.max_bytes)))
            n = len(whole)
            cut1 = round(n * (1 - self.val_fraction - self.test_fraction))
            cut2 = round(n * (1 - self.test_fraction))
            splits = {"train": whole.slice(0, cut1), "validation": whole.slice(cut1, cut2),
                      "test": whole.slice(cut2, n)}
        for split, part in splits.items():
            if len(part) == 0:
                raise ValueError(f"the {split} split of {self.describe_source()} is empty ({len(parts.get('all', part))} "
                                 f"tokens in all; val_fraction={self.val_fraction}, test_fraction={self.test_fraction})")
        self.__dict__["_splits"] = splits  # not a dataclass field: repr and == ignore it
        return splits

    def validate(self) -> None:
        name = type(self).__name__
        if int(self.vocab_size) != 256:
            raise ValueError(f"{name}.vocab_size={self.vocab_size}; byte tokens need 256")
        if self.on_bad_file not in BAD_FILE_POLICIES:
            raise ValueError(f"{name}.on_bad_file={self.on_bad_file!r}; allowed: {', '.join(BAD_FILE_POLICIES)}")
        for field_name in ("val_fraction", "test_fraction"):
            if not 0 < float(getattr(self, field_name)) < 1:
                raise ValueError(f"{name}.{field_name}={getattr(self, field_name)}; must be between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"{name}: val_fraction + test_fraction = {self.val_fraction + self.test_fraction}; "
                             "must be < 1 to leave tokens for training")
        if self.max_bytes is not None and int(self.max_bytes) < 1:
            raise ValueError(f"{name}.max_bytes={self.max_bytes}; must be >= 1 or null")
        super().validate()  # lengths >= 1, eval_lengths not empty

    def prepare(self) -> None:
        """validate(), then build the corpus (or read its cache) and check that every length fits its split: a
        bad file or folder fails here, before training (CorpusDataModule.prepare_data calls this)."""
        name = type(self).__name__
        self.validate()
        self.splits()
        checks = [("train", "train_length", self.train_length)]
        checks += [(s, "eval_lengths", n) for n in self.eval_lengths for s in ("validation", "test")]
        for split, what, length in checks:
            self.check_fits(split, length, f"{name}.{what}")

    def check_fits(self, split: str, length: int, what: str) -> None:
        """A window of length + 1 tokens must fit in the split (inside one document unless cross_documents)."""
        part = self.splits()[split]
        cum, _ = part.window_starts(int(length) + 1, self.cross_documents)
        if cum[-1] < 1:
            if self.cross_documents:
                where, size, label = f"the whole {split} split", len(part), ""
            else:
                where, size, label = f"every file of the {split} split", int(part.lengths.max(initial=0)), "longest: "
            raise ValueError(f"{what}={length}: a window of {int(length) + 1} tokens is longer than {where} of "
                             f"{self.describe_source()} ({label}{size} tokens{self.length_note(size)}); "
                             f"use shorter lengths or more data")

    def length_note(self, tokens: int) -> str:
        return ""

    def generate(self, *, seed: int, split: str, step: int, batch_size: int, length: int, **eval_kwargs):
        """(inputs, targets) int64; split "train", "val" or "test".

        Training: [batch_size, length], windows drawn from (seed, split, step). Evaluation: batch_size windows
        of the longest evaluation length drawn from (0, split, step), each cut into longest // length
        consecutive rows: [batch_size * (longest // length), length]. So every evaluation length scores the
        same samples (when it divides the longest) and differs only in how much context precedes them.
        """
        check_unknown_kwargs(self.kind, eval_kwargs)
        check_batch_size(batch_size)
        if split == "train":
            part = self.splits()["train"]
            return sample_windows(part, rng_for(seed, split, step), batch_size, length, self.cross_documents)
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}; allowed: 'train', 'val', 'test'")
        part = self.splits()["validation" if split == "val" else "test"]
        longest = max([int(n) for n in self.eval_lengths] + [int(length)])
        inputs, targets = sample_windows(part, rng_for(0, split, step), batch_size, longest, self.cross_documents)
        rows = longest // length
        # [batch, longest] -> [batch * rows, length]: row r of window b is inputs[b, r*length:(r+1)*length]
        return (inputs[:, :rows * length].reshape(batch_size * rows, length),
                targets[:, :rows * length].reshape(batch_size * rows, length))
