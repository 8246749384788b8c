"""Induction heads, as in the Mamba paper (Gu & Dao 2023, section 4.1.2; the task comes from H3/Safari).

The last token of the vocabulary is a trigger. A sequence is random data tokens (never the trigger) in which
the trigger appears once, followed by some token X; the sequence ends with the trigger again and the model
must output X: it has to find the earlier trigger and copy what came after it. One answer per sequence, at
the last position. The paper trains at length 256 with vocabulary 16 and evaluates at 2^6..2^20; the
config's `eval_lengths` holds the list (the CPU default stops at 4096).

Worked example: `generate(InductionHeadsConfig(), seed=0, split="train", step=0, batch_size=1, length=12)`
(vocab 16, trigger 15) gives

    position   0    1    2    3    4    5    6    7    8    9   10   11
    inputs    11   12    6   15    6   14   13    0    0    1   12   15
    targets -100 -100 -100 -100 -100 -100 -100 -100 -100 -100 -100    6

the trigger 15 sits at position 3, X = 6 follows it, and at the final trigger the target is 6 (the other 6
at position 2 is noise: only the token after the trigger counts).
"""
from dataclasses import dataclass, field

import torch

from hybrid.tasks.base import IGNORE_INDEX, TaskConfig, check_batch_size, check_unknown_kwargs, rng_for


@dataclass(kw_only=True)
class InductionHeadsConfig(TaskConfig):
    vocab_size: int = 16  # data tokens 0..vocab_size-2, trigger vocab_size-1
    train_length: int = 256
    eval_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])

    @property
    def trigger_token(self) -> int:
        return self.vocab_size - 1

    def validate(self) -> None:
        if int(self.vocab_size) < 3:
            raise ValueError(f"InductionHeadsConfig.vocab_size={self.vocab_size}; must be >= 3 "
                             "(a trigger token and at least two data tokens)")
        super().validate()

    def check_length(self, length: int) -> None:
        if int(length) < 3:
            raise ValueError(f"sequence length {length} is too short; induction heads needs >= 3 "
                             "(trigger, X, trigger)")

    def generate(self, **kwargs):
        return generate(self, **kwargs)


def generate(cfg: InductionHeadsConfig, *, seed: int, split: str, step: int, batch_size: int, length: int,
             **eval_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns inputs [batch_size, length] int64 and targets [batch_size, length] int64 (X at the last position,
    IGNORE_INDEX elsewhere)."""
    check_unknown_kwargs("induction_heads", eval_kwargs)
    check_batch_size(batch_size)
    cfg.check_length(length)
    g = rng_for(seed, split, step)
    rows = torch.arange(batch_size)
    inputs = torch.randint(0, cfg.trigger_token, (batch_size, length), generator=g)  # [batch, L], no trigger
    first = torch.randint(0, length - 2, (batch_size,), generator=g)  # [batch], trigger at 0..L-3, X after it
    answer = inputs[rows, first + 1]  # [batch]: X is the random token that already follows the trigger
    inputs[rows, first] = cfg.trigger_token
    inputs[:, -1] = cfg.trigger_token
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = answer
    return inputs, targets
