"""CorpusDataModule: the TaskDataModule (tasks/datamodule.py) serving a real-data task (tasks/audio.py,
tasks/text.py) and saying that its tokens are bytes.

Everything else is inherited: the training stream is batch s = task.generate(seed, "train", s), so the state
(`batches_consumed`) resumes exactly; evaluation sets are fixed windows per eval length ("L256", "L1024").
Only cheap checks run in __init__; the corpus is built (or read from its Arrow cache) in `prepare_data`, which
Lightning calls once per node before training, and read again in `setup` on every process (under DDP the other
ranks wait on the cache's file lock). Used without a Trainer, the first batch builds it.
"""
from collections.abc import Mapping

from hybrid.tasks.corpus import CorpusConfig
from hybrid.tasks.datamodule import TaskDataModule


class CorpusDataModule(TaskDataModule):
    """TaskDataModule's arguments; `task` must be a CorpusConfig (AudioConfig, TextConfig) or a config of one."""

    def __init__(self, task: CorpusConfig | Mapping, **kwargs):
        super().__init__(task, **kwargs)
        if not isinstance(self.task, CorpusConfig):
            raise TypeError(f"CorpusDataModule serves real-data tasks (hybrid.tasks.audio.AudioConfig, "
                            f"hybrid.tasks.text.TextConfig), got {type(self.task).__name__}; "
                            f"use hybrid.tasks.datamodule.TaskDataModule for synthetic tasks")

    @property
    def bytes_per_token(self) -> float:
        """1.0: a token is a byte (a mu-law sample or a text byte), so bits per byte = loss / ln 2."""
        return self.task.bytes_per_token

    def prepare_data(self) -> None:
        self.task.prepare()

    def setup(self, stage: str) -> None:
        self.task.prepare()
