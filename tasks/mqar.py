"""Multi-query associative recall (MQAR), as in Zoology (Arora, Eyuboglu et al. 2023).

A sequence opens with `num_kv_pairs` key-value pairs (k1 v1 k2 v2 ...), keys drawn without repetition from
[1, V/2) and values without repetition from the upper half [V/2, V). Token 0 is never a key: it is the filler
(`filler="pad"`, the default, Zoology's Figure 2 setting random_non_queries=False), and every position after the
pairs is filler except the queries, where each key is queried once: at a query position the target is the key's
value. With `filler="random"` the filler is uniform over every token except this sequence's keys (Zoology's
random_non_queries draws over 8192 tokens, where a filler equal to a live key is a 1-in-1000 accident; at a
vocabulary of 64 it would be 1 filler in 8, each a second, wrong occurrence of a key for a lookup to find).
Queries sit on even offsets of the query region (slot s at position 2k + 2s, k = num_kv_pairs); the slots
are drawn without replacement with probability proportional to (s + 1)^(power_a - 1), Zoology's power law:
with power_a = 0.01 most queries come soon after the pairs and a few far away, like repeated bigrams in real
text; power_a = 1 is uniform. The value never follows its query in the input: the model must recall it.

Worked example: `generate(MQARConfig(vocab_size=16, num_kv_pairs=3), seed=0, split="train", step=0,
batch_size=1, length=16)` (keys 1..7, values 8..15, filler 0) gives

    position   0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15
    inputs     6   14    3    8    4   10    3    0    0    0    0    0    6    0    4    0
    targets -100 -100 -100 -100 -100 -100    8 -100 -100 -100 -100 -100   14 -100   10 -100

the pairs 6->14, 3->8, 4->10 fill positions 0-5; key 3 is queried at position 6 (target 8), key 6 at
position 12 (target 14), key 4 at position 14 (target 10); every other position after 5 is the filler 0.
"""
from dataclasses import dataclass, field

import torch

from hybrid.tasks.base import (
    IGNORE_INDEX,
    EvalSpec,
    TaskConfig,
    check_batch_size,
    check_unknown_kwargs,
    k_smallest,
    rng_for,
)

FILLERS = ("pad", "random")
PAD = 0  # the filler token of filler="pad"; never a key or a value


@dataclass(kw_only=True)
class MQARConfig(TaskConfig):
    vocab_size: int = 64  # keys 1..31, values 32..63, token 0 the filler
    num_kv_pairs: int = 8
    filler: str = "pad"  # pad: token 0 (Zoology's Figure 2); random: any token but this sequence's keys
    power_a: float = 0.01  # query-gap power law; 1.0 is uniform
    train_length: int = 64
    eval_lengths: list[int] = field(default_factory=lambda: [64, 128, 256])
    # evaluate also at these numbers of pairs (sets "L<length>_kv<k>", every length x k); None: num_kv_pairs only
    eval_num_kv_pairs: list[int] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.eval_num_kv_pairs is not None:  # plain ints (Hydra hands lists over as ListConfig)
            self.eval_num_kv_pairs = [int(k) for k in self.eval_num_kv_pairs]

    @property
    def num_keys(self) -> int:
        """Keys are 1..num_keys (token 0 is the filler), values num_keys + 1..vocab_size - 1."""
        return self.vocab_size // 2 - 1

    def validate(self) -> None:
        name = type(self).__name__
        if self.filler not in FILLERS:
            raise ValueError(f"{name}.filler={self.filler!r}; allowed: {', '.join(FILLERS)}")
        if not float(self.power_a) > 0:
            raise ValueError(f"{name}.power_a={self.power_a}; must be > 0 (1.0 is uniform)")
        check_pairs(self, self.num_kv_pairs)
        super().validate()
        for k in self.eval_num_kv_pairs or []:
            check_pairs(self, k)
            for n in self.eval_lengths:
                try:
                    self.check_length(n, k)
                except ValueError as err:
                    raise ValueError(f"{name}.eval_num_kv_pairs: {err}") from None

    def eval_specs(self) -> list[EvalSpec]:
        """One set per length ("L<length>"), or per length and number of pairs ("L<length>_kv<k>")."""
        if not self.eval_num_kv_pairs:
            return super().eval_specs()
        return [EvalSpec(f"L{n}_kv{int(k)}", n, {"num_kv_pairs": int(k)})
                for n in self.eval_lengths for k in self.eval_num_kv_pairs]

    def check_length(self, length: int, num_kv_pairs: int | None = None) -> None:
        k = int(self.num_kv_pairs if num_kv_pairs is None else num_kv_pairs)
        slots = (int(length) - 2 * k) // 2
        if slots < k:
            raise ValueError(f"sequence length {length} cannot hold {k} key-value pairs and {k} queries; "
                             f"allowed: length >= 4 * num_kv_pairs = {4 * k}")

    def generate(self, **kwargs):
        return generate(self, **kwargs)


def check_pairs(cfg: MQARConfig, num_kv_pairs: int) -> None:
    """Keys (1..num_keys) and values are distinct within a sequence, so each range must hold them all."""
    k = int(num_kv_pairs)
    if k < 1:
        raise ValueError(f"MQARConfig.num_kv_pairs={num_kv_pairs}; must be >= 1")
    if cfg.num_keys < k:
        raise ValueError(f"MQARConfig.vocab_size={cfg.vocab_size} is too small for the filler token 0, {k} distinct "
                         f"keys and {k} distinct values; allowed: vocab_size >= 2 * num_kv_pairs + 2 = {2 * k + 2}")


def generate(cfg: MQARConfig, *, seed: int, split: str, step: int, batch_size: int, length: int,
             num_kv_pairs: int | None = None, **eval_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns inputs [batch_size, length] int64 and targets [batch_size, length] int64 (the paired value at
    each query position, IGNORE_INDEX elsewhere). `num_kv_pairs` overrides the config's, e.g. to evaluate
    on more pairs than trained on."""
    check_unknown_kwargs("mqar", eval_kwargs, allowed=["num_kv_pairs"])
    k = int(cfg.num_kv_pairs if num_kv_pairs is None else num_kv_pairs)
    check_pairs(cfg, k)
    check_batch_size(batch_size)
    cfg.check_length(length, k)
    g = rng_for(seed, split, step)
    first_value = cfg.vocab_size // 2
    # k distinct keys and values per row: the positions of a row's k smallest uniform draws, in increasing order of
    # the draw
    keys = 1 + k_smallest(torch.rand(batch_size, cfg.num_keys, generator=g), k)  # [batch, k]
    values = first_value + k_smallest(torch.rand(batch_size, cfg.vocab_size - first_value, generator=g), k)

    if cfg.filler == "pad":
        inputs = torch.full((batch_size, length), PAD, dtype=torch.int64)
    else:  # uniform over the vocab_size - k tokens that are not this row's keys: draw, then skip over the keys
        drawn = torch.randint(0, cfg.vocab_size - k, (batch_size, length), generator=g)  # [batch, L]
        # the i-th smallest key s_i shifts every draw >= s_i - i up by one
        thresholds = keys.sort(dim=1).values - torch.arange(k)  # [batch, k], non-decreasing
        inputs = drawn + torch.searchsorted(thresholds, drawn, right=True)
    inputs[:, 0:2 * k:2] = keys
    inputs[:, 1:2 * k:2] = values

    slots = (length - 2 * k) // 2
    weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (cfg.power_a - 1)  # [slots]
    chosen = torch.multinomial(weights.expand(batch_size, slots), k, replacement=False, generator=g)  # [batch, k]
    query_pos = 2 * k + 2 * chosen  # [batch, k]: query of key i at query_pos[:, i]
    inputs.scatter_(1, query_pos, keys)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets.scatter_(1, query_pos, values)
    return inputs, targets
