"""TaskDataModule: serves any synthetic task (hybrid.tasks.*) to Lightning, generated on the fly.

Training data is an endless stream: batch number s is `task.generate(seed, split="train", step=s)`, so the
stream is a pure function of the number of batches the training loop has consumed. That count is the
DataModule's state (`state_dict`, which Lightning saves in every checkpoint), so a run resumed from a
checkpoint taken after k batches continues with batch k, exactly as if it had never stopped. The count
advances in `on_before_batch_transfer`, i.e. when the training loop actually uses a batch: Lightning draws
one batch ahead, and counting draws would skip that one on resume. Used without a Trainer (tests, notebooks)
the count advances with every batch drawn from the stream.

`data_module(task, ...)` (conf/train.yaml's `data`) picks the DataModule for a task: CorpusDataModule for real
data (tasks/corpus_datamodule.py, which builds the corpus cache in `prepare_data`), TaskDataModule otherwise.

Evaluation sets are fixed: `eval_batches` batches per entry of `task.eval_specs()` (one per eval length; for
niah one per length x depth), generated with split="val" (validation) or split="test" (test), one
DataLoader each, in the order of `eval_names`.

Several ranks (DDP, FSDP): `batch_size` and `eval_batch_size` are per rank. Every batch, training or evaluation,
is generated as the global batch of world_size * batch_size sequences and rank r keeps its r-th slice of rows
(`_rank_slice`), so N ranks at batch b see exactly the sequences one rank sees at batch N * b, evaluation sets are
split across ranks without duplicates (hybrid.lit sums their statistics over ranks), and every rank has the same
number of batches (FSDP needs every rank in every forward). Each rank generates the whole global batch: the
generators draw whole-batch tensors, so a slice cannot be drawn alone; generation is cheap beside a step.
"""
import warnings
from collections.abc import Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from hybrid.tasks.base import EvalSpec, TaskConfig

# Lightning warns about any IterableDataset with a __len__ (the evaluation sets) that worker processes could each
# replay it; these loaders run in the main process (num_workers=0), so the count is exact.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def data_module(task: TaskConfig, **kwargs) -> "TaskDataModule":
    """The DataModule serving `task` (a TaskConfig), with TaskDataModule's keyword arguments."""
    from hybrid.tasks.corpus import CorpusConfig
    if isinstance(task, CorpusConfig):
        from hybrid.tasks.corpus_datamodule import CorpusDataModule
        return CorpusDataModule(task, **kwargs)
    return TaskDataModule(task, **kwargs)


class TaskDataModule(L.LightningDataModule):
    """Args:
        task: a TaskConfig (e.g. MQARConfig), or a mapping with a `_target_` that Hydra instantiates into one.
        batch_size: training batch size.
        eval_batches: batches per evaluation set.
        eval_batch_size: batch size of evaluation sets (defaults to batch_size).
        seed: data seed; training, validation and test streams all derive from it.
        vocab_size: optional; when given it must equal task.vocab_size.
    """

    def __init__(self, task: TaskConfig | Mapping, batch_size: int = 32, eval_batches: int = 4,
                 eval_batch_size: int | None = None, seed: int = 0, vocab_size: int | None = None):
        super().__init__()
        if not isinstance(task, TaskConfig):
            if isinstance(task, Mapping) and "_target_" in task:
                from hydra.utils import instantiate  # only when handed an uninstantiated config
                task = instantiate(task)
            if not isinstance(task, TaskConfig):
                raise TypeError(f"task must be a TaskConfig (e.g. hybrid.tasks.mqar.MQARConfig) or a config with "
                                f"a _target_ naming one, got {type(task).__name__}")
        task.validate()  # a bad length or count fails here, before any training
        if vocab_size is not None and int(vocab_size) != task.vocab_size:
            raise ValueError(f"vocab_size={vocab_size} disagrees with the task's vocab_size={task.vocab_size}; "
                             "set it once, in the task (task.vocab_size)")
        for name, value in [("batch_size", batch_size), ("eval_batches", eval_batches),
                            ("eval_batch_size", eval_batch_size or batch_size)]:
            if int(value) < 1:
                raise ValueError(f"{name}={value}; must be >= 1")
        self.task = task
        self.batch_size, self.eval_batches = int(batch_size), int(eval_batches)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = int(seed)
        self.batches_consumed = 0  # training batches used so far: the step of the next training batch

    @property
    def vocab_size(self) -> int:
        return self.task.vocab_size

    @property
    def eval_specs(self) -> list[EvalSpec]:
        return self.task.eval_specs()

    @property
    def eval_names(self) -> list[str]:
        """One name per val/test dataloader, in order: "L256", "L1024", or for niah "L512_d50"."""
        return [spec.name for spec in self.eval_specs]

    def _ranks(self) -> tuple[int, int]:
        """(this process's global rank, world size); (0, 1) without a Trainer."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _rank_slice(self, batch_size: int, **generate_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the global batch task.generate(batch_size=world_size * batch_size, ...)."""
        rank, world = self._ranks()
        batch = self.task.generate(seed=self.seed, batch_size=world * batch_size, **generate_kwargs)
        if world == 1:
            return batch
        rows = batch[0].shape[0] // world  # corpus evaluation returns several rows per sequence
        return tuple(t[rank * rows:(rank + 1) * rows] for t in batch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_TrainStream(self), batch_size=None, num_workers=0)

    def _eval_dataloaders(self, split: str) -> list[DataLoader]:
        return [DataLoader(_FixedBatches(self, split, spec), batch_size=None, shuffle=False, num_workers=0)
                for spec in self.eval_specs]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_dataloaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_dataloaders("test")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.batches_consumed += 1
        return batch

    def state_dict(self) -> dict:
        return {"batches_consumed": self.batches_consumed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_consumed = int(state_dict["batches_consumed"])


class _TrainStream(IterableDataset):
    """Endless training batches (inputs, targets), each [batch_size, train_length] int64, starting at the
    DataModule's consumed count whenever iteration (re)starts."""

    def __init__(self, dm: TaskDataModule):
        self.dm = dm

    def __iter__(self):
        dm = self.dm
        step = dm.batches_consumed
        while True:
            batch = dm._rank_slice(dm.batch_size, split="train", step=step, length=dm.task.train_length)
            step += 1
            if dm.trainer is None:  # no training loop to report use: a drawn batch is a used batch
                dm.batches_consumed = step
            yield batch


class _FixedBatches(IterableDataset):
    """`eval_batches` fixed batches of one evaluation set (this rank's slice of each); batch i is generated on
    demand with step=i. Iterable, so that Lightning does not give it a DistributedSampler: the rows are split
    across ranks here, and a sampler would split the batches again."""

    def __init__(self, dm: TaskDataModule, split: str, spec: EvalSpec):
        self.dm, self.split, self.spec = dm, split, spec
        self.num_batches, self.batch_size = dm.eval_batches, dm.eval_batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        for index in range(self.num_batches):
            yield self.dm._rank_slice(self.batch_size, split=self.split, step=index, length=self.spec.length,
                                      **self.spec.kwargs)
