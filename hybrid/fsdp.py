"""What conf/trainer/fsdp.yaml builds Lightning's FSDPStrategy from: each residual block its own FSDP unit.

Wrapping per block (hybrid.blocks.residual.ResidualBlock) gathers one block's parameters at a time in forward and
backward, so a rank holds the full weights of one block plus its shard of the rest; the embedding, final norm and
head stay in the root unit. The same policy picks what activation checkpointing recomputes: a whole block.

Wrapped, a parameter's name gains the wrappers' attribute names, and FSDP shows each rank a 1-D view of its shard
of every weight: `plain_name` gives the name in the unwrapped model, so hybrid.lit decides weight decay on the
shapes it recorded before wrapping.
"""
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from hybrid.blocks.residual import ResidualBlock

WRAPPER_ATTRIBUTES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def block_policy(enabled: bool = True) -> ModuleWrapPolicy | None:
    """A policy selecting every ResidualBlock (FSDPStrategy's auto_wrap_policy or activation_checkpointing_policy);
    None when not enabled (no activation checkpointing)."""
    return ModuleWrapPolicy({ResidualBlock}) if enabled else None


def plain_name(name: str) -> str:
    """A parameter's name in the unwrapped model ("blocks.0._fsdp_wrapped_module.norm.weight" -> "blocks.0.norm.weight")."""
    for attribute in WRAPPER_ATTRIBUTES:
        name = name.replace(attribute, "")
    return name
