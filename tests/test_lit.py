"""The LightningModule's training-step bookkeeping: a non-finite loss is caught (on the device, checked later),
evaluation sums add up, the progress line appears when the progress bar is off, the compile option checks."""
import logging

import lightning as L
import pytest
import torch

from hybrid.lit import HybridLitModule, answer_stats
from hybrid.model import HybridLM
from hybrid.progress import ProgressLog
from hybrid.tasks.datamodule import TaskDataModule
from hybrid.tasks.mqar import MQARConfig


def module(**kwargs) -> HybridLitModule:
    torch.manual_seed(0)
    model = HybridLM(16, 8, "MAF", blocks={"M": {"d_state": 2}, "A": {"n_heads": 2}})
    return HybridLitModule(model, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3), **kwargs)


def test_answer_stats_counts_only_answers():
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    targets = torch.full((2, 5), -100)
    targets[0, 1], targets[1, 4] = 3, logits[1, 4].argmax()
    loss_sum, correct, count = answer_stats(logits, targets)
    assert count == 2 and correct == 1 + int(logits[0, 1].argmax() == 3)
    expected = -(logits[0, 1].log_softmax(-1)[3] + logits[1, 4].log_softmax(-1).max())
    assert torch.allclose(loss_sum.double(), expected)


class Stepped(HybridLitModule):
    """global_step set by hand (Lightning's reads the trainer)."""
    step = 0

    @property
    def global_step(self) -> int:
        return self.step


def test_first_nonfinite_step_is_remembered_and_reported():
    torch.manual_seed(0)
    m = Stepped(HybridLM(16, 8, "F"), optimizer=torch.optim.AdamW)
    m.check_finite()  # nothing seen yet
    for step, loss in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0]):
        m.step = step
        m._note_nonfinite(torch.tensor(loss))
        if step < 2:
            m.check_finite()
    with pytest.raises(FloatingPointError, match="training loss is nan at step 2"):
        m.check_finite()


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="finite_check_every=0"):
        module(finite_check_every=0)
    with pytest.raises(ValueError, match="compile='fast'.*reduce-overhead"):
        module(compile="fast")


def test_compile_option_compiles_in_place_and_keeps_the_state_dict():
    m = module(compile="default")
    keys = list(m.state_dict())
    m.configure_model()
    assert m.model._compiled_call_impl is not None and list(m.state_dict()) == keys


def test_evaluation_sums_over_batches():
    m = module(eval_names=["L16"])
    x = torch.randint(0, 16, (3, 16))
    y = torch.where(torch.rand(3, 16) < 0.5, x, torch.full_like(x, -100))
    m._eval_step((x, y), 0)
    m._eval_step((x, y), 0)
    assert torch.equal(m._val[0], 2 * torch.stack([s.double() for s in answer_stats(m.model(x).logits, y)]))


def test_progress_line_when_the_bar_is_off(tmp_path, caplog):
    dm = TaskDataModule(MQARConfig(vocab_size=16, num_kv_pairs=2, train_length=16, eval_lengths=[16]),
                        batch_size=2, eval_batches=1)
    m = module(progress_every_s=1e-9, eval_names=dm.eval_names)
    trainer = L.Trainer(max_steps=3, val_check_interval=3, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                        accelerator="cpu")
    with caplog.at_level(logging.INFO, logger="hybrid.progress"):
        trainer.fit(m, datamodule=dm)
    lines = [r.getMessage() for r in caplog.records if r.name == "hybrid.progress"]
    assert any(line.startswith("step 2/3") and "steps/s" in line for line in lines)
    assert any("val/acc_L16" in line for line in lines)
    assert any(isinstance(c, ProgressLog) for c in trainer.callbacks)


def test_no_progress_line_with_the_bar_on(tmp_path):
    m = module()
    trainer = L.Trainer(max_steps=1, enable_progress_bar=True, logger=False, accelerator="cpu")
    m.trainer = trainer
    assert m.configure_callbacks() == []


def test_run_summary_prints_the_tasks_own_metric():
    from hybrid.train import summary_table
    recall = summary_table({"val/acc_L64": 0.5, "val/loss_L64": 1.0}, "run", 1.0).splitlines()
    assert recall[0].split() == ["eval", "accuracy", "loss"] and recall[1].split() == ["L64", "0.5000", "1.0000"]
    audio = summary_table({"val/acc_L256": 0.1, "val/loss_L256": 3.4, "val/bpb_L256": 4.9}, "run", 1.0).splitlines()
    assert audio[0].split() == ["eval", "bits/byte", "loss"] and audio[1].split() == ["L256", "4.9000", "3.4000"]


def fit_metrics(tmp_path, m, **trainer_kwargs) -> list[str]:
    """The train/loss lines of metrics.csv after a 4-step fit of the module on a tiny MQAR."""
    dm = TaskDataModule(MQARConfig(vocab_size=16, num_kv_pairs=2, train_length=16, eval_lengths=[16]),
                        batch_size=2, eval_batches=1)
    m.eval_names = dm.eval_names
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(max_steps=4, val_check_interval=4, enable_progress_bar=False, logger=logger,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                        accelerator="cpu", **trainer_kwargs)
    trainer.fit(m, datamodule=dm)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("train/loss")
    return [line for line in lines[1:] if line.split(",")[column]]


def test_training_metrics_are_logged_only_on_the_steps_a_logger_writes(tmp_path, monkeypatch):
    logs_always = module()
    logs_always._logs_this_step = lambda: True  # as before: self.log at every step, Lightning writes every 2nd
    every_step = fit_metrics(tmp_path / "a", logs_always, log_every_n_steps=2)
    calls = []
    m = module()
    monkeypatch.setattr(m, "log", lambda name, *a, **k: calls.append(name) or HybridLitModule.log(m, name, *a, **k))
    assert fit_metrics(tmp_path / "b", m, log_every_n_steps=2) == every_step  # the same rows reach the CSV
    assert len(every_step) == 2 and calls.count("train/loss") == 2  # steps 2 and 4 of 4, nothing else logged


def test_fused_adamw_is_clipped_under_bf16_mixed():
    m = HybridLitModule(HybridLM(16, 8, "F"), optimizer=torch.optim.AdamW)
    m.trainer = L.Trainer(precision="bf16-mixed", accelerator="cpu", logger=False)
    optimizer = torch.optim.AdamW(m.parameters(), fused=True)
    m.model(torch.randint(0, 16, (2, 5))).logits.square().sum().backward()
    with pytest.raises(RuntimeError, match="fused"):  # what Lightning alone does
        m.trainer.precision_plugin.clip_gradients(optimizer, 1e-3)
    m.configure_gradient_clipping(optimizer, 1e-3, "norm")
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters() if p.grad is not None]))
    assert norm == pytest.approx(1e-3, rel=1e-3)
