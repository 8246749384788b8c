"""Models converted from transformers' MambaForCausalLM and JambaForCausalLM generate exactly the tokens of
transformers' own greedy generate (its recurrent cache path against ours)."""
import pytest
import torch
from convert_models import tiny_jamba, tiny_mamba

from hybrid.convert import from_transformers


def theirs_and_ours(hf, vocab, batch=2, prompt_len=7, new=15):
    prompt = torch.randint(0, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=0)
    got = from_transformers(hf).eval().generate(prompt, max_new_tokens=new)
    return got, want


@pytest.mark.parametrize("kw", [{}, dict(tie=False, bias=True)], ids=["tied", "untied-bias"])
def test_mamba_generates_transformers_tokens(kw):
    got, want = theirs_and_ours(tiny_mamba(**kw), 41)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kw", [{}, dict(num_hidden_layers=3, attn_layer_period=3, attn_layer_offset=2)],
                         ids=["attn-moe-every-2nd", "attention-last"])
def test_jamba_generates_transformers_tokens(kw):
    got, want = theirs_and_ours(tiny_jamba(**kw), 53)
    assert torch.equal(got, want)


def test_jamba_attention_first_generates_transformers_forward_argmax():
    """With attention in layer 0 or 1 of 3 (period 3), transformers 5.x's own cached greedy generate departs from
    the argmax of its own full forward (checked here, so the test notices when that changes); ours follows the
    forward."""
    hf = tiny_jamba(num_hidden_layers=3, attn_layer_period=3, attn_layer_offset=0)
    got, want = theirs_and_ours(hf, 53)
    with torch.no_grad():
        their_forward_argmax = hf(got).logits[:, 6:-1].argmax(-1)
    assert torch.equal(got[:, 7:], their_forward_argmax)
    assert not torch.equal(got, want), "transformers' Jamba generate now agrees: compare to it directly"
