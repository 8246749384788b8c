"""The task generators: docstring examples, answer masking and correctness, determinism, clear errors."""
import pytest
import torch

from hybrid.tasks import IGNORE_INDEX, TASKS, induction_heads, mqar, niah, rng_for, selective_copying
from hybrid.tasks.induction_heads import InductionHeadsConfig
from hybrid.tasks.mqar import MQARConfig
from hybrid.tasks.niah import QUERY, NIAHConfig
from hybrid.tasks.selective_copying import MARKER, NOISE, SelectiveCopyingConfig

I = IGNORE_INDEX

# The worked example of each module docstring: (module, config, generate kwargs, inputs, targets).
EXAMPLES = {
    "induction_heads": (induction_heads, InductionHeadsConfig(), {"length": 12},
                        [11, 12, 6, 15, 6, 14, 13, 0, 0, 1, 12, 15], [I] * 11 + [6]),
    "selective_copying": (selective_copying, SelectiveCopyingConfig(num_data_tokens=3), {"length": 12},
                          [0, 0, 13, 0, 5, 0, 8, 0, 0, 1, 1, 1], [I] * 9 + [13, 5, 8]),
    "mqar": (mqar, MQARConfig(vocab_size=16, num_kv_pairs=3), {"length": 16},
             [6, 14, 3, 8, 4, 10, 3, 0, 0, 0, 0, 0, 6, 0, 4, 0],
             [I] * 6 + [8] + [I] * 5 + [14, I, 10, I]),
    "niah": (niah, NIAHConfig(vocab_size=16), {"length": 12, "depth": 50},
             [1, 8, 4, 12, 5, 9, 7, 10, 2, 14, 0, 5], [I] * 11 + [9]),
}

# Small configs for the property tests, with an awkward (odd) length each.
CONFIGS = {
    "induction_heads": (InductionHeadsConfig(), 37),
    "selective_copying": (SelectiveCopyingConfig(num_data_tokens=5), 33),
    "mqar": (MQARConfig(vocab_size=32, num_kv_pairs=6, power_a=0.5), 63),
    "mqar_random": (MQARConfig(vocab_size=32, num_kv_pairs=6, power_a=0.5, filler="random"), 63),
    "niah_kv": (NIAHConfig(vocab_size=20), 41),
    "niah_random": (NIAHConfig(vocab_size=20, haystack="random"), 41),
}


def draw(cfg, length, step=0, split="train", batch_size=16, seed=3, **kw):
    return cfg.generate(seed=seed, split=split, step=step, batch_size=batch_size, length=length, **kw)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_docstring_example(name):
    module, cfg, kw, inputs, targets = EXAMPLES[name]
    x, y = module.generate(cfg, seed=0, split="train", step=0, batch_size=1, **kw)
    assert x.tolist() == [inputs] and y.tolist() == [targets]
    # the docstring shows these very numbers
    doc = " ".join(module.__doc__.split())
    assert " ".join(str(t) for t in inputs) in doc
    assert " ".join(str(t) for t in targets) in doc


def test_registry_names_every_task():
    assert set(TASKS) == {"induction_heads", "selective_copying", "mqar", "niah"}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_shapes_dtypes_and_vocab(name):
    cfg, length = CONFIGS[name]
    cfg.validate()
    x, y = draw(cfg, length)
    assert x.shape == y.shape == (16, length) and x.dtype == y.dtype == torch.int64
    assert 0 <= x.min() and x.max() < cfg.vocab_size
    answers = y[y != I]
    assert answers.numel() > 0 and 0 <= answers.min() and answers.max() < cfg.vocab_size


@pytest.mark.parametrize("name", list(CONFIGS))
def test_determinism(name):
    cfg, length = CONFIGS[name]
    a, b = draw(cfg, length, step=5), draw(cfg, length, step=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in [draw(cfg, length, step=6), draw(cfg, length, step=5, split="val"), draw(cfg, length, step=5, seed=4)]:
        assert not torch.equal(a[0], other[0])


def test_rng_is_a_stable_hash():
    # a fixed number: a salted or process-dependent seed (Python's hash()) would change between runs
    assert rng_for(0, "train", 0).initial_seed() == 8067341547408638067
    assert rng_for(0, "train", 0).initial_seed() != rng_for(0, "train", 1).initial_seed()
    assert rng_for(1, "train", 0).initial_seed() != rng_for(0, "train", 0).initial_seed()
    with pytest.raises(TypeError, match="split"):
        rng_for(0, 1, 0)


def test_induction_heads_answer_follows_the_first_trigger():
    cfg = InductionHeadsConfig(vocab_size=10)
    x, y = draw(cfg, 50, batch_size=64)
    t = cfg.trigger_token
    assert (x[:, -1] == t).all() and ((x == t).sum(1) == 2).all()
    assert ((y != I).sum(1) == 1).all() and (y[:, :-1] == I).all()
    first = (x == t).int().argmax(1)
    assert (first <= 47).all()
    assert torch.equal(y[:, -1], x[torch.arange(64), first + 1])
    assert (y[:, -1] != t).all()


def test_selective_copying_targets_are_the_data_in_order():
    cfg = SelectiveCopyingConfig(vocab_size=12, num_data_tokens=5)
    x, y = draw(cfg, 40, batch_size=64)
    context = 40 - 5
    assert (x[:, context:] == MARKER).all() and (x[:, :context] != MARKER).all()
    assert (y[:, :context] == I).all()
    for row in range(64):
        data = x[row, :context][x[row, :context] != NOISE]
        assert data.tolist() == y[row, context:].tolist()


def test_mqar_target_is_the_value_paired_earlier():
    cfg = MQARConfig(vocab_size=40, num_kv_pairs=7, power_a=0.3)
    x, y = draw(cfg, 70, batch_size=32)
    k = 7
    keys, values = x[:, 0:2 * k:2], x[:, 1:2 * k:2]
    assert (keys >= 1).all() and (keys < 20).all() and (values >= 20).all()
    assert (y[:, :2 * k] == I).all()
    for row in range(32):
        pairs = dict(zip(keys[row].tolist(), values[row].tolist()))
        assert len(pairs) == k and len(set(values[row].tolist())) == k
        positions = (y[row] != I).nonzero().flatten()
        assert len(positions) == k  # every key queried once
        assert ((positions - 2 * k) % 2 == 0).all()
        queried = x[row, positions].tolist()
        assert sorted(queried) == sorted(pairs)
        assert y[row, positions].tolist() == [pairs[q] for q in queried]


def test_mqar_power_law_favours_near_queries():
    cfg = MQARConfig(vocab_size=64, num_kv_pairs=4, power_a=0.01)
    _, y = draw(cfg, 256, batch_size=256)
    offsets = ((y != I).nonzero()[:, 1] - 8).float()
    _, y_uniform = draw(MQARConfig(vocab_size=64, num_kv_pairs=4, power_a=1.0), 256, batch_size=256)
    offsets_uniform = ((y_uniform != I).nonzero()[:, 1] - 8).float()
    assert offsets.median() < 40 < offsets_uniform.median()


def test_mqar_eval_override_of_pairs():
    _x, y = draw(MQARConfig(vocab_size=64, num_kv_pairs=4), 64, num_kv_pairs=12)
    assert ((y != I).sum(1) == 12).all()
    _, y = draw(MQARConfig(vocab_size=64, num_kv_pairs=8), 16, num_kv_pairs=4)  # fits 4 pairs, not 8
    assert ((y != I).sum(1) == 4).all()
    with pytest.raises(ValueError, match=r"vocab_size=64 .* >= 2 \* num_kv_pairs \+ 2 = 66"):
        draw(MQARConfig(vocab_size=64, num_kv_pairs=4), 256, num_kv_pairs=32)
    draw(MQARConfig(vocab_size=64, num_kv_pairs=4), 256, num_kv_pairs=31)  # keys 1..31: all of them


@pytest.mark.parametrize("filler", ["pad", "random"])
def test_mqar_each_key_occurs_only_as_its_pair_and_its_query(filler):
    """Zoology's task: a key appears twice, in its pair and at its query, never among the filler (a filler
    equal to a key would be a second occurrence for a lookup to find, followed by a wrong value). Under the
    old generator (filler uniform over the whole vocabulary, keys included) about 1 filler in 8 was a key."""
    k, length = 8, 128
    x, y = draw(MQARConfig(vocab_size=64, num_kv_pairs=k, filler=filler), length, batch_size=64)
    keys = x[:, 0:2 * k:2]  # [batch, k]
    occurrences = (x[:, :, None] == keys[:, None, :]).sum(1)  # [batch, k]
    assert (occurrences == 2).all()
    rest = x[:, 2 * k:][y[:, 2 * k:] == I]  # every filler token of the batch
    if filler == "pad":
        assert (rest == 0).all()
    else:  # uniform over what is allowed: the values and the keys not in use all appear, the filler 0 too
        assert set(rest.tolist()) >= {0, *range(32, 64)} and len(set(rest.tolist())) > 40


def test_mqar_default_task_is_zoologys():
    """The default filler (conf/task/mqar.yaml) is the pad token 0, as Zoology's Figure 2 (random_non_queries=False)."""
    x, y = draw(MQARConfig(), 64, batch_size=8)
    assert (x[:, 16:][y[:, 16:] == I] == 0).all() and (x[:, :16] != 0).all()


@pytest.mark.parametrize("haystack", ["kv", "random"])
def test_niah_needle_depth_and_answer(haystack):
    cfg = NIAHConfig(vocab_size=24, haystack=haystack)
    length = 43
    for depth in [0, 50, 100]:
        x, y = draw(cfg, length, batch_size=32, depth=depth)
        assert (x[:, -2] == QUERY).all() and (x[:, :-2] != QUERY).all()
        assert (y[:, :-1] == I).all()
        key = x[:, -1]
        assert (key >= 1).all() and (key <= cfg.num_keys).all()
        where = x[:, :-2] == key[:, None]
        assert (where.sum(1) == 1).all()  # the needle key appears once in the haystack
        pos = where.int().argmax(1)
        assert torch.equal(y[:, -1], x[torch.arange(32), pos + 1])
        last = (length - 2) // 2 - 1 if haystack == "kv" else length - 4
        expected = {0: 0, 50: round(last / 2), 100: last}[depth]
        assert (pos == (2 * expected if haystack == "kv" else expected)).all()
    x, _ = draw(cfg, length, batch_size=64)  # depth drawn per row in training
    pos = (x[:, :-2] == x[:, -1:]).int().argmax(1)
    assert len(set(pos.tolist())) > 3


def test_niah_eval_grid_names():
    cfg = NIAHConfig(eval_lengths=[64, 256], eval_depths=[0, 12.5, 100])
    names = [s.name for s in cfg.eval_specs()]
    assert names == ["L64_d0", "L64_d12.5", "L64_d100", "L256_d0", "L256_d12.5", "L256_d100"]
    assert cfg.eval_specs()[1].kwargs == {"depth": 12.5} and cfg.eval_specs()[4].length == 256


@pytest.mark.parametrize("cfg, match", [
    (InductionHeadsConfig(vocab_size=2), "vocab_size=2"),
    (InductionHeadsConfig(eval_lengths=[256, 2]), "eval_lengths: sequence length 2"),
    (InductionHeadsConfig(eval_lengths=[]), "eval_lengths is empty"),
    (SelectiveCopyingConfig(num_data_tokens=20, train_length=30), r"train_length: .*30.* >= 2 \* num_data_tokens = 40"),
    (SelectiveCopyingConfig(num_data_tokens=0), "num_data_tokens=0"),
    (MQARConfig(num_kv_pairs=8, train_length=31), r"length 31 .* >= 4 \* num_kv_pairs = 32"),
    (MQARConfig(vocab_size=10, num_kv_pairs=8), r"vocab_size=10 .* >= 2 \* num_kv_pairs \+ 2 = 18"),
    (MQARConfig(filler="noise"), "filler='noise'; allowed: pad, random"),
    (MQARConfig(power_a=0), "power_a=0"),
    (NIAHConfig(haystack="hay"), "haystack='hay'; allowed: kv, random"),
    (NIAHConfig(eval_depths=[50, 101]), "depth 101"),
    (NIAHConfig(vocab_size=4), "vocab_size=4"),
    (NIAHConfig(eval_lengths=[3]), "length 3"),
])
def test_validate_names_the_bad_value(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_generator_rejects_bad_calls():
    cfg = MQARConfig()
    with pytest.raises(ValueError, match="length 20"):
        draw(cfg, 20)
    with pytest.raises(ValueError, match="batch_size=0"):
        draw(cfg, 64, batch_size=0)
    with pytest.raises(TypeError, match=r"unknown options \['depth'\]"):
        draw(cfg, 64, depth=50)
    with pytest.raises(ValueError, match="depth -1"):
        draw(NIAHConfig(), 64, depth=-1)


def test_mqar_evaluates_at_other_numbers_of_pairs():
    cfg = MQARConfig(vocab_size=32, num_kv_pairs=4, train_length=32, eval_lengths=[32, 64], eval_num_kv_pairs=[2, 8])
    cfg.validate()
    specs = cfg.eval_specs()
    assert [s.name for s in specs] == ["L32_kv2", "L32_kv8", "L64_kv2", "L64_kv8"]
    inputs, targets = cfg.generate(seed=0, split="val", step=0, batch_size=3, length=64, **specs[3].kwargs)
    assert ((targets != -100).sum(1) == 8).all()  # eight queries, one per pair
    assert [s.name for s in MQARConfig().eval_specs()] == ["L64", "L128", "L256"]
    with pytest.raises(ValueError, match="eval_num_kv_pairs: sequence length 32 cannot hold 16"):
        MQARConfig(vocab_size=64, num_kv_pairs=4, train_length=32, eval_lengths=[32],
                   eval_num_kv_pairs=[16]).validate()


def test_mqar_keys_and_values_are_distinct_uniform_subsets_as_argsort_drew_them():
    """The k keys and values of a row are the indices of its k smallest uniform draws (a uniform random k-subset in
    random order), now through topk: the same tokens as the argsort the generator used before, at a large vocabulary
    too, so that a seed's data stream did not change; every key and value distinct."""
    cfg = MQARConfig(vocab_size=8192, num_kv_pairs=16)
    for step in range(3):
        x, _ = mqar.generate(cfg, seed=5, split="train", step=step, batch_size=32, length=256)
        g = rng_for(5, "train", step)
        keys = 1 + torch.rand(32, cfg.num_keys, generator=g).argsort(dim=1)[:, :16]
        values = 4096 + torch.rand(32, 4096, generator=g).argsort(dim=1)[:, :16]
        assert torch.equal(x[:, 0:32:2], keys) and torch.equal(x[:, 1:32:2], values)
        assert all(len(set(row.tolist())) == 32 for row in x[:, :32])


def test_selective_copying_positions_are_argsorts_through_topk():
    """The data positions (a row's n smallest uniform draws over the context, in increasing position) through topk:
    the tokens land where the whole argsort put them before, at the paper's length 4096."""
    cfg = SelectiveCopyingConfig(num_data_tokens=16, train_length=4096, eval_lengths=[4096])
    x, _ = selective_copying.generate(cfg, seed=1, split="train", step=0, batch_size=8, length=4096)
    g = rng_for(1, "train", 0)
    data = torch.randint(selective_copying.FIRST_DATA, cfg.vocab_size, (8, 16), generator=g)
    positions = torch.rand(8, 4096 - 16, generator=g).argsort(dim=1)[:, :16].sort(dim=1).values
    assert torch.equal(x.gather(1, positions), data)
