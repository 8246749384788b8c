"""What every synthetic task shares: the config base class, the seeded generator, the ignore index.

A task is a config dataclass (a subclass of `TaskConfig`) plus a pure generator

    generate(cfg, *, seed, split, step, batch_size, length, **eval_kwargs) -> (inputs, targets)

with inputs [batch, length] int64 token ids and targets [batch, length] int64: at an answer position t the
token the model must predict after reading inputs[:, :t + 1], IGNORE_INDEX everywhere else. Same arguments
give identical tensors in any process: the random stream comes from `rng_for(seed, split, step)`, a
torch.Generator seeded by a cryptographic hash of the three (never Python's salted `hash()`).
"""
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

IGNORE_INDEX = -100  # what F.cross_entropy(ignore_index=...) skips: every non-answer position


def rng_for(seed: int, split: str, step: int) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, split, step), stable across processes and machines."""
    if not isinstance(split, str):
        raise TypeError(f"split must be a string such as 'train', 'val' or 'test', got {split!r}")
    key = f"{int(seed)}|{split}|{int(step)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))  # manual_seed wants < 2**63
    return generator


def k_smallest(draws: torch.Tensor, k: int) -> torch.Tensor:
    """draws [batch, n] -> [batch, k] int64: the column indices of each row's k smallest values, smallest first, so k
    distinct columns per row for uniform draws (argsort's first k through topk: a batch of 64 at n 8192 in 6.8
    instead of 39 ms, one thread)."""
    return draws.topk(k, dim=1, largest=False, sorted=True).indices


def check_unknown_kwargs(task: str, eval_kwargs: dict, allowed: Iterable[str] = ()) -> None:
    """Raise TypeError naming the evaluation options a task's generator does not know."""
    unknown = sorted(set(eval_kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{task} generate() got unknown options {unknown}; allowed: {sorted(allowed) or 'none'}")


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation set: its name (e.g. "L1024" or "L512_d50"), its length, the generator's extra options."""
    name: str
    length: int
    kwargs: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class TaskConfig:
    """Fields every task has. Subclasses redeclare them with defaults and add their own."""
    vocab_size: int
    train_length: int
    eval_lengths: list[int]
    # evaluation sequences longer than this run chunk by chunk through the inference cache (hybrid/chunked_eval.py)
    eval_chunk: int | None = None

    def __post_init__(self):
        # Hydra hands lists over as ListConfig; plain ints keep the config picklable and comparable.
        self.eval_lengths = [int(n) for n in self.eval_lengths]

    # -- what subclasses override -------------------------------------------------------------------------
    def check_length(self, length: int) -> None:
        """Raise ValueError when one sequence of `length` tokens cannot hold this task's content."""
        if int(length) < 1:
            raise ValueError(f"sequence length {length} must be >= 1")

    def generate(self, *, seed: int, split: str, step: int, batch_size: int, length: int, **eval_kwargs):
        """The task module's generate(self, ...); see the module docstring."""
        raise NotImplementedError(f"{type(self).__name__} has no generator")

    # -- shared -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise a ValueError naming the bad value before any training starts."""
        name = type(self).__name__
        if int(self.vocab_size) < 2:
            raise ValueError(f"{name}.vocab_size={self.vocab_size}; must be >= 2")
        if self.eval_chunk is not None and int(self.eval_chunk) < 1:
            raise ValueError(f"{name}.eval_chunk={self.eval_chunk}; must be >= 1 (tokens per chunk) or null")
        if not self.eval_lengths:
            raise ValueError(f"{name}.eval_lengths is empty; give at least one length (e.g. [{self.train_length}])")
        for what, length in [("train_length", self.train_length)] + [("eval_lengths", n) for n in self.eval_lengths]:
            try:
                self.check_length(length)
            except ValueError as err:
                raise ValueError(f"{name}.{what}: {err}") from None

    def eval_specs(self) -> list[EvalSpec]:
        """One evaluation set per length, named "L<length>"."""
        return [EvalSpec(f"L{n}", n) for n in self.eval_lengths]


def check_batch_size(batch_size: int) -> None:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}; must be >= 1")
