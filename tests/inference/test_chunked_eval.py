"""Chunked evaluation (task.eval_chunk) equals whole-sequence evaluation, in the function and through Lightning's
validation loop; attention's growing KV cache is an error naming its size when it would not fit."""
import lightning as L
import pytest
import torch
from test_decode import block_model, config_model

from hybrid import chunked_eval
from hybrid.lit import HybridLitModule, answer_stats
from hybrid.tasks.datamodule import TaskDataModule
from hybrid.tasks.induction_heads import InductionHeadsConfig


@pytest.mark.parametrize("name", ["jamba_small", "mamba_small"])
@pytest.mark.parametrize("chunk", [7, 64])
def test_chunked_stats_equal_whole_sequence(name, chunk):
    model = config_model(name)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 13, (2, 300), generator=g)
    targets = torch.where(torch.rand(2, 300, generator=g) < 0.3, torch.randint(0, 13, (2, 300), generator=g), -100)
    with torch.no_grad():
        whole = answer_stats(model(inputs).logits, targets)
    chunked = chunked_eval.chunked_stats(model, inputs, targets, chunk, answer_stats)
    assert abs(chunked[0] - whole[0]) <= 1e-5 * whole[0]  # summed cross-entropy
    assert chunked[1] == whole[1] and chunked[2] == whole[2] == (targets != -100).sum()


def test_validation_with_eval_chunk_equals_without(monkeypatch):
    chunked_batches = []
    check = chunked_eval.check_kv_fits
    monkeypatch.setattr(chunked_eval, "check_kv_fits", lambda *a: chunked_batches.append(a) or check(*a))

    def validate(eval_chunk):
        torch.manual_seed(0)
        task = InductionHeadsConfig(vocab_size=13, train_length=16, eval_lengths=[16, 200], eval_chunk=eval_chunk)
        dm = TaskDataModule(task, batch_size=2, eval_batches=2)
        model = HybridLitModule(block_model("attention-rope-gqa"), optimizer=torch.optim.AdamW,
                                eval_names=dm.eval_names)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer.validate(model, datamodule=dm, verbose=False)[0]
    whole = validate(None)
    assert not chunked_batches
    chunked = validate(32)
    assert len(chunked_batches) == 2  # the two batches at L=200; those at L=16 fit in one chunk
    assert set(whole) == set(chunked) and all(abs(whole[k] - chunked[k]) <= 1e-5 * abs(whole[k]) for k in whole)


def test_attention_kv_that_does_not_fit_is_a_clear_error(monkeypatch):
    model = block_model("attention-rope-gqa")  # 1 attention layer, 2 KV heads of 4 dims: 64 bytes per token
    assert chunked_eval.kv_cache_bytes(model, 3, 1000) == 3 * 1000 * 64
    assert chunked_eval.kv_cache_bytes(block_model("mamba"), 3, 10**9) == 0
    monkeypatch.setattr(chunked_eval, "free_memory_bytes", lambda device: 100_000)
    tokens = torch.zeros(3, 1000, dtype=torch.long)
    with pytest.raises(MemoryError, match="KV cache needs 0.00 GiB and only 0.00 GiB are free"):
        chunked_eval.chunked_stats(model, tokens, tokens, 100, answer_stats)


def test_bad_eval_chunk():
    with pytest.raises(ValueError, match="eval_chunk=0"):
        InductionHeadsConfig(eval_chunk=0).validate()


def test_chunked_under_bf16_autocast_near_whole():
    """Lightning's bf16-mixed evaluation: the cache takes autocast's dtype and the chunks agree with the whole."""
    model = config_model("jamba_small")
    g = torch.Generator().manual_seed(3)
    inputs, targets = torch.randint(0, 13, (2, 100), generator=g), torch.randint(0, 13, (2, 100), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        whole = answer_stats(model(inputs).logits, targets)
        chunked = chunked_eval.chunked_stats(model, inputs, targets, 16, answer_stats)
    assert abs(chunked[0] - whole[0]) <= 2e-2 * whole[0] and chunked[2] == whole[2] == 200
