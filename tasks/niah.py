"""Needle in a haystack (NIAH): one key -> value needle hidden at a chosen depth, queried at the end.

Tokens: 0 is the query marker, keys are 1..K (K = (vocab_size - 1) // 2), values are K+1..vocab_size-1. A
sequence of length L is a haystack of C = L - 2 tokens, then the query marker, then the needle's key; the
one target, at the last position, is the needle's value. The needle key appears nowhere else, so the answer
is unambiguous. Two haystacks:
  - "kv": C // 2 distractor key/value pairs (keys drawn from every key but the needle's, so they may repeat
    among themselves), one of which is replaced by the needle; a filler value ends an odd C.
  - "random": uniform random tokens (any token but the marker and the needle key), the needle's two tokens
    written over two neighbours.
The depth in percent places the needle: 0 is the first slot of the haystack, 100 the last one (for "kv" the
slots are the pairs, for "random" the C - 1 token positions). Training draws the depth uniformly per
sequence (depth=None); evaluation takes a grid of lengths x `eval_depths`, named like "L512_d50".

Worked example: `generate(NIAHConfig(vocab_size=16), seed=0, split="train", step=0, batch_size=1,
length=12, depth=50)` (keys 1..7, values 8..15) gives

    position   0    1    2    3    4    5    6    7    8    9   10   11
    inputs     1    8    4   12    5    9    7   10    2   14    0    5
    targets -100 -100 -100 -100 -100 -100 -100 -100 -100 -100 -100    9

the haystack is 5 pairs (1 8, 4 12, 5 9, 7 10, 2 14); depth 50 puts the needle 5 -> 9 in the middle pair
(positions 4-5); then the query marker 0 and the key 5, whose target is 9.
"""
import math
from dataclasses import dataclass, field

import torch

from hybrid.tasks.base import IGNORE_INDEX, EvalSpec, TaskConfig, check_batch_size, check_unknown_kwargs, rng_for

QUERY = 0
HAYSTACKS = ("kv", "random")


@dataclass(kw_only=True)
class NIAHConfig(TaskConfig):
    vocab_size: int = 64  # query marker, keys 1..31, values 32..63
    haystack: str = "kv"
    train_length: int = 128
    eval_lengths: list[int] = field(default_factory=lambda: [128, 256, 512])
    eval_depths: list[float] = field(default_factory=lambda: [0, 25, 50, 75, 100])

    def __post_init__(self):
        super().__post_init__()
        self.eval_depths = [float(d) for d in self.eval_depths]

    @property
    def num_keys(self) -> int:
        return (self.vocab_size - 1) // 2

    def validate(self) -> None:
        name = type(self).__name__
        if self.haystack not in HAYSTACKS:
            raise ValueError(f"{name}.haystack={self.haystack!r}; allowed: {', '.join(HAYSTACKS)}")
        if int(self.vocab_size) < 5:
            raise ValueError(f"{name}.vocab_size={self.vocab_size}; must be >= 5 (the query marker, at least "
                             "two keys so distractors differ from the needle, and values)")
        if not self.eval_depths:
            raise ValueError(f"{name}.eval_depths is empty; give depths in percent, e.g. [0, 50, 100]")
        for depth in self.eval_depths:
            check_depth(depth)
        super().validate()

    def check_length(self, length: int) -> None:
        if int(length) < 4:
            raise ValueError(f"sequence length {length} is too short; a needle (2 tokens), the query marker "
                             "and the key need length >= 4")

    def eval_specs(self) -> list[EvalSpec]:
        """A grid: every eval length at every eval depth, named "L<length>_d<depth>"."""
        return [EvalSpec(f"L{n}_d{d:g}", n, {"depth": d}) for n in self.eval_lengths for d in self.eval_depths]

    def generate(self, **kwargs):
        return generate(self, **kwargs)


def check_depth(depth: float) -> None:
    if not 0 <= float(depth) <= 100:
        raise ValueError(f"needle depth {depth}; allowed: a percentage in [0, 100]")


def _slot(depth: float | None, count: int, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """The needle's slot among `count` slots, [batch_size] int64: uniform when depth is None, else the slot
    nearest depth% of the way from the first slot to the last."""
    if depth is None:
        return torch.randint(0, count, (batch_size,), generator=g)
    return torch.full((batch_size,), math.floor(float(depth) / 100 * (count - 1) + 0.5), dtype=torch.int64)


def generate(cfg: NIAHConfig, *, seed: int, split: str, step: int, batch_size: int, length: int,
             depth: float | None = None, **eval_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns inputs [batch_size, length] int64 and targets [batch_size, length] int64 (the needle's value at
    the last position, IGNORE_INDEX elsewhere). `depth` in percent places the needle; None draws it."""
    check_unknown_kwargs("niah", eval_kwargs, allowed=["depth"])
    check_batch_size(batch_size)
    cfg.check_length(length)
    if depth is not None:
        check_depth(depth)
    g = rng_for(seed, split, step)
    num_keys, first_value = cfg.num_keys, cfg.num_keys + 1
    rows = torch.arange(batch_size)
    key = torch.randint(1, first_value, (batch_size,), generator=g)  # [batch], the needle's key
    value = torch.randint(first_value, cfg.vocab_size, (batch_size,), generator=g)  # [batch]
    context = length - 2

    if cfg.haystack == "kv":
        pairs = context // 2
        # uniform over the keys other than the needle's: draw from num_keys - 1, skip over the needle key
        other = torch.randint(1, num_keys, (batch_size, pairs), generator=g)  # [batch, pairs]
        other = other + (other >= key[:, None]).long()
        hay = torch.randint(first_value, cfg.vocab_size, (batch_size, context), generator=g)  # values + filler
        hay[:, 0:2 * pairs:2] = other
        pos = 2 * _slot(depth, pairs, batch_size, g)  # [batch]
    else:
        # uniform over tokens 1..vocab_size-1 except the needle key
        hay = torch.randint(1, cfg.vocab_size - 1, (batch_size, context), generator=g)  # [batch, C]
        hay = hay + (hay >= key[:, None]).long()
        pos = _slot(depth, context - 1, batch_size, g)  # [batch]
    hay[rows, pos] = key
    hay[rows, pos + 1] = value

    inputs = torch.cat([hay, torch.full((batch_size, 1), QUERY), key[:, None]], dim=1)  # [batch, L]
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = value
    return inputs, targets
