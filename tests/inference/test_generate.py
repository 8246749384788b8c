"""HybridLM.generate: greedy equals repeated argmax of the full forward; a batch of prompts of different lengths
gives each prompt's own tokens; sampling is seeded and filtered; models converted from transformers' Mamba and
Jamba generate exactly the tokens of transformers' own greedy generate."""
import pytest
import torch
from test_decode import BLOCKS, MODELS, VOCAB, block_model, config_model

from hybrid.inference import sample


def greedy_by_full_forward(model, prompt, n):
    """prompt [batch, L] -> [batch, L + n], each token the argmax of a full forward over all before it."""
    tokens = prompt
    with torch.no_grad():
        for _ in range(n):
            tokens = torch.cat([tokens, model(tokens).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return tokens


def any_model(name):
    return block_model(name) if name in BLOCKS else config_model(name)


@pytest.mark.parametrize("name", MODELS + list(BLOCKS))
def test_greedy_generate_equals_repeated_argmax(name):
    model = any_model(name)
    prompt = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(0))
    out = model.generate(prompt, max_new_tokens=12)
    assert out.shape == (3, 21) and torch.equal(out[:, :9], prompt)
    assert torch.equal(out, greedy_by_full_forward(model, prompt, 12))


@pytest.mark.parametrize("name", MODELS + list(BLOCKS))
def test_prompts_of_different_lengths_equal_each_alone(name):
    model = any_model(name)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g) for n in (5, 1, 11, 8)]
    out = model.generate(prompts, max_new_tokens=6, pad_token_id=-1)
    assert out.shape == (4, 11 + 6)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=6)[0]
        assert torch.equal(out[i, :len(p) + 6], alone), i
        assert (out[i, len(p) + 6:] == -1).all()
    padded = torch.nn.utils.rnn.pad_sequence(prompts, batch_first=True, padding_value=7)  # the lengths form
    same = model.generate(padded, max_new_tokens=6, lengths=[5, 1, 11, 8], pad_token_id=-1)
    assert torch.equal(same, out)


def test_eos_stops_a_row_and_pads_it():
    model = block_model("mamba")
    prompt = torch.randint(0, VOCAB, (4, 3), generator=torch.Generator().manual_seed(3))
    free = model.generate(prompt, max_new_tokens=40)
    eos = int(free[0, 5])  # a token row 0 produces as its third new token
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=eos, pad_token_id=-1)
    for row, want in zip(out, free):
        new = want[3:]
        hits = (new == eos).nonzero()
        end = 3 + (int(hits[0]) + 1 if len(hits) else 40)
        assert torch.equal(row[:end], want[:end]) and (row[end:] == -1).all()


def test_sampling_seeded_and_filtered():
    model = block_model("attention-rope-gqa")
    prompt = torch.randint(0, VOCAB, (4, 5), generator=torch.Generator().manual_seed(4))
    a = model.generate(prompt, 20, temperature=1.0, seed=7)
    assert torch.equal(a, model.generate(prompt, 20, temperature=1.0, seed=7))
    assert not torch.equal(a, model.generate(prompt, 20, temperature=1.0, seed=8))
    assert torch.equal(model.generate(prompt, 20, temperature=1.5, top_k=1, seed=1), model.generate(prompt, 20))
    assert torch.equal(model.generate(prompt, 20, temperature=1.5, top_p=1e-6, seed=1), model.generate(prompt, 20))


def test_sample_distribution_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(sample(logits, 1.0, generator=g), minlength=4) / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    assert set(sample(logits, 1.0, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(sample(logits, 1.0, top_p=0.7, generator=g).tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.7


@pytest.mark.parametrize("kwargs,match", [(dict(max_new_tokens=0), "max_new_tokens=0"),
                                          (dict(temperature=-1.0), "temperature=-1.0"),
                                          (dict(top_k=0), "top_k=0"), (dict(top_p=1.5), "top_p=1.5"),
                                          (dict(lengths=[3, 9]), "1..5")])
def test_bad_arguments(kwargs, match):
    model = block_model("mlp")
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        model.generate(torch.zeros(2, 5, dtype=torch.long), **args)
