"""TaskDataModule: the Hydra configs, eval names and loaders, and resuming the training stream."""
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from stream_resume import assert_resumes

from hybrid.tasks import IGNORE_INDEX
from hybrid.tasks.datamodule import TaskDataModule, data_module
from hybrid.tasks.mqar import MQARConfig
from hybrid.tasks.niah import NIAHConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "task"
TASK_YAMLS = sorted(p.stem for p in CONF.glob("*.yaml"))


def small_dm(**kw):
    task = MQARConfig(vocab_size=32, num_kv_pairs=4, train_length=32, eval_lengths=[32, 64])
    return TaskDataModule(task, **{"batch_size": 4, "eval_batches": 2, "seed": 7, **kw})


@pytest.mark.parametrize("name", TASK_YAMLS)
def test_task_yaml_instantiates(name):
    # as conf/train.yaml holds it: the task config at `task`, its data sizes at `data`, a model reading
    # ${task.vocab_size}, the DataModule built as hybrid.train builds it
    cfg = OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), {"model": {"vocab": "${task.vocab_size}"}})
    assert set(cfg.task) >= {"_target_", "vocab_size", "train_length", "eval_lengths"}
    assert set(cfg.data) == {"batch_size", "eval_batch_size", "eval_batches"}
    dm = data_module(instantiate(cfg.task), seed=0, **cfg.data)
    assert isinstance(dm, TaskDataModule)
    assert dm.vocab_size == cfg.model.vocab == cfg.task.vocab_size
    assert len(dm.eval_names) == len(dm.val_dataloader()) == len(dm.test_dataloader())
    assert dm.task.train_length in dm.task.eval_lengths
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (cfg.data.batch_size, dm.task.train_length) and (y != IGNORE_INDEX).any()


def test_hydra_config_as_mapping_and_vocab_mismatch():
    node = {"_target_": "hybrid.tasks.mqar.MQARConfig", "vocab_size": 32, "num_kv_pairs": 4}
    assert TaskDataModule(node).vocab_size == 32
    with pytest.raises(ValueError, match="vocab_size=64 disagrees with the task's vocab_size=32"):
        TaskDataModule(MQARConfig(vocab_size=32, num_kv_pairs=4), vocab_size=64)
    with pytest.raises(TypeError, match="TaskConfig"):
        TaskDataModule({"num_kv_pairs": 4})
    with pytest.raises(ValueError, match="train_length: sequence length 16"):  # validated before training
        TaskDataModule(MQARConfig(num_kv_pairs=8, train_length=16))
    with pytest.raises(ValueError, match="batch_size=0"):
        small_dm(batch_size=0)


def test_eval_names_and_loaders():
    dm = small_dm(eval_batch_size=3)
    assert dm.eval_names == ["L32", "L64"]
    loaders = dm.val_dataloader()
    for loader, length in zip(loaders, [32, 64]):
        batches = list(loader)
        assert len(batches) == 2 and all(x.shape == (3, length) for x, _ in batches)
        again = list(loader)  # fixed: the same batches every epoch
        assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    val, test = next(iter(loaders[0])), next(iter(dm.test_dataloader()[0]))
    assert not torch.equal(val[0], test[0])  # test is a different split
    niah = TaskDataModule(NIAHConfig(eval_lengths=[64, 128], eval_depths=[0, 50]), batch_size=2)
    assert niah.eval_names == ["L64_d0", "L64_d50", "L128_d0", "L128_d50"]
    x, _ = next(iter(niah.val_dataloader()[3]))
    assert x.shape == (2, 128)


def test_state_dict_resume_continues_the_stream():
    _, reference = assert_resumes(small_dm)
    assert not torch.equal(reference[0][0], reference[1][0])


class _Recorder(L.LightningModule):
    """Records the first input row of every training batch; a single weight keeps the optimizer happy."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0][0].clone())
        return (self.w * batch[0].float().mean()) ** 2

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(max_steps, root, ckpt_path=None):
    model, dm = _Recorder(), small_dm()
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=2, limit_val_batches=1,
                        num_sanity_val_steps=1, default_root_dir=root,
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)])
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model.seen, dm


@pytest.mark.filterwarnings("ignore")
def test_trainer_resume_continues_with_the_next_batch(tmp_path):
    # Lightning fetches one batch ahead and runs validation in between: neither may shift the stream.
    whole, dm = _fit(5, tmp_path / "whole")
    assert dm.batches_consumed == 5
    first, _ = _fit(3, tmp_path / "cut")
    assert torch.load(tmp_path / "cut" / "last.ckpt", weights_only=False)["TaskDataModule"] == {"batches_consumed": 3}
    rest, _ = _fit(5, tmp_path / "cut", ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    assert len(whole) == 5 and len(first) == 3 and len(rest) == 2
    assert all(torch.equal(a, b) for a, b in zip(first + rest, whole, strict=True))
    assert not torch.equal(whole[2], whole[3])
