"""What conf/trainer/fsdp.yaml builds Lightning's FSDPStrategy from: each residual block its own FSDP unit.

Wrapping per block (hybrid.blocks.residual.ResidualBlock) gathers one block's parameters at a time in forward and
backward, so a rank holds the full weights of one block plus its shard of the rest; the embedding, final norm and
head stay in the root unit. The same policy picks what activation checkpointing recomputes: a whole block.
"""
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from hybrid.blocks.residual import ResidualBlock


def block_policy(enabled: bool = True) -> ModuleWrapPolicy | None:
    """A policy selecting every ResidualBlock (FSDPStrategy's auto_wrap_policy or activation_checkpointing_policy);
    None when not enabled (no activation checkpointing)."""
    return ModuleWrapPolicy({ResidualBlock}) if enabled else None
