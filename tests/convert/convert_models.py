"""Small random transformers models for the conversion tests (built here: no download, CPU, float32)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()  # their "falling back to the PyTorch path" notices


def perturb(model, seed=0, scale=0.1):
    """Add noise to every parameter, so that no norm weight is 1, no D is 1 and no A_log repeats across
    channels: a swapped or skipped tensor then changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def causal_lm_loss(logits, tokens):
    """Next-token cross-entropy, as transformers' ForCausalLMLoss computes it (labels = the tokens)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def tiny_mamba(tie=True, bias=False, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(hidden_size=24, num_hidden_layers=3, vocab_size=41, state_size=5, expand=2, conv_kernel=3,
                time_step_rank=3, use_bias=bias, tie_word_embeddings=tie)
    cfg = transformers.MambaConfig(**{**args, **kw})
    return perturb(transformers.MambaForCausalLM(cfg), seed).eval()


def tiny_jamba(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(hidden_size=32, num_hidden_layers=4, vocab_size=53, intermediate_size=40, num_attention_heads=4,
                num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, attn_layer_period=2,
                attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1, mamba_d_state=6,
                mamba_d_conv=3, mamba_dt_rank=3, use_mamba_kernels=False)
    cfg = transformers.JambaConfig(**{**args, **kw})
    return perturb(transformers.JambaForCausalLM(cfg), seed).eval()


def check_same_function(hf, ours, vocab, shapes=((2, 17),), seed=1, tol=1e-5):
    """Logits (relative error) and next-token loss of `ours` and `hf` agree within `tol` on fresh random token
    batches of each [batch, L] shape (the loss only where L > 1)."""
    g = torch.Generator().manual_seed(seed)
    for shape in shapes:
        tokens = torch.randint(0, vocab, shape, generator=g)
        with torch.no_grad():
            theirs = hf(tokens, labels=tokens)
            out = ours(tokens)
        assert out.logits.shape == theirs.logits.shape
        assert rel_err(out.logits, theirs.logits) < tol, shape
        if shape[1] > 1:
            assert abs(causal_lm_loss(out.logits, tokens).item() - theirs.loss.item()) < tol * theirs.loss.item()


def check_export_round_trip(hf, ours, out_dir, vocab, class_name):
    """ours -> transformers (`class_name`) in out_dir: the same tensors as `hf` bit for bit, the saved model computes
    ours' function, and reading out_dir back gives ours' weights bit for bit. Returns the exported model."""
    from hybrid.convert import from_transformers, to_transformers
    back = to_transformers(ours, out_dir)
    assert type(back).__name__ == class_name
    want, got = hf.state_dict(), back.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval()
    check_same_function(loaded, ours.eval(), vocab, shapes=((2, 9),))
    again = from_transformers(out_dir)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))
    return back
