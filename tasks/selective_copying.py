"""Selective copying, as in the Mamba paper (Gu & Dao 2023, section 4.1.1, Figure 2).

`num_data_tokens` data tokens are scattered at random positions among noise tokens; then come as many
marker tokens, and at the i-th marker the model must output the i-th data token: the data reproduced in
order, the noise skipped. Unlike plain copying the gaps vary, so a time-invariant model cannot solve it.
Tokens: 0 noise, 1 marker, 2..vocab_size-1 data. A sequence of length L is a context of L - n tokens
(n = num_data_tokens) holding the data, followed by the n markers; the targets are the data tokens at the
marker positions. The paper uses length 4096, vocabulary 16 and 16 data tokens; the CPU default is smaller.

Worked example: `generate(SelectiveCopyingConfig(num_data_tokens=3), seed=0, split="train", step=0,
batch_size=1, length=12)` gives

    position   0    1    2    3    4    5    6    7    8    9   10   11
    inputs     0    0   13    0    5    0    8    0    0    1    1    1
    targets -100 -100 -100 -100 -100 -100 -100 -100 -100   13    5    8

the data 13, 5, 8 sit at positions 2, 4 and 6 of the 9-token context, then three markers (token 1); at the
markers the targets are 13, 5, 8.
"""
from dataclasses import dataclass, field

import torch

from hybrid.tasks.base import IGNORE_INDEX, TaskConfig, check_batch_size, check_unknown_kwargs, k_smallest, rng_for

NOISE, MARKER, FIRST_DATA = 0, 1, 2


@dataclass(kw_only=True)
class SelectiveCopyingConfig(TaskConfig):
    vocab_size: int = 16  # noise, marker and 14 data tokens
    num_data_tokens: int = 8
    train_length: int = 64
    eval_lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])

    def validate(self) -> None:
        if int(self.vocab_size) < FIRST_DATA + 1:
            raise ValueError(f"SelectiveCopyingConfig.vocab_size={self.vocab_size}; must be >= 3 "
                             "(noise, marker and at least one data token)")
        if int(self.num_data_tokens) < 1:
            raise ValueError(f"SelectiveCopyingConfig.num_data_tokens={self.num_data_tokens}; must be >= 1")
        super().validate()

    def check_length(self, length: int) -> None:
        n = int(self.num_data_tokens)
        if int(length) < 2 * n:
            raise ValueError(f"sequence length {length} cannot hold {n} data tokens and {n} markers; "
                             f"allowed: length >= 2 * num_data_tokens = {2 * n}")

    def generate(self, **kwargs):
        return generate(self, **kwargs)


def generate(cfg: SelectiveCopyingConfig, *, seed: int, split: str, step: int, batch_size: int, length: int,
             **eval_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns inputs [batch_size, length] int64 and targets [batch_size, length] int64 (the data tokens in
    order at the last num_data_tokens positions, IGNORE_INDEX elsewhere)."""
    check_unknown_kwargs("selective_copying", eval_kwargs)
    check_batch_size(batch_size)
    cfg.check_length(length)
    g = rng_for(seed, split, step)
    n = cfg.num_data_tokens
    context = length - n
    data = torch.randint(FIRST_DATA, cfg.vocab_size, (batch_size, n), generator=g)  # [batch, n]
    # n distinct positions per row (those of its n smallest uniform draws: at length 4096 a batch of 64 in 3.4
    # instead of a whole argsort's 35 ms), in increasing order: [batch, n]
    positions = k_smallest(torch.rand(batch_size, context, generator=g), n).sort(dim=1).values
    inputs = torch.full((batch_size, length), NOISE, dtype=torch.int64)
    inputs.scatter_(1, positions, data)
    inputs[:, context:] = MARKER
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, context:] = data
    return inputs, targets
