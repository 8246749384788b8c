"""Synthetic recall tasks generated on the fly: a config dataclass and a pure, seeded generator per task.

`TASKS` maps a task's name to its config class; `hybrid.tasks.datamodule.TaskDataModule` serves any of them
to Lightning (kept out of this import so that generating data needs only torch).
"""
from hybrid.tasks.base import IGNORE_INDEX, EvalSpec, TaskConfig, rng_for
from hybrid.tasks.induction_heads import InductionHeadsConfig
from hybrid.tasks.mqar import MQARConfig
from hybrid.tasks.niah import NIAHConfig
from hybrid.tasks.selective_copying import SelectiveCopyingConfig

TASKS: dict[str, type[TaskConfig]] = {
    "induction_heads": InductionHeadsConfig,
    "selective_copying": SelectiveCopyingConfig,
    "mqar": MQARConfig,
    "niah": NIAHConfig,
}

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "EvalSpec",
    "InductionHeadsConfig",
    "MQARConfig",
    "NIAHConfig",
    "SelectiveCopyingConfig",
    "TaskConfig",
    "rng_for",
]
