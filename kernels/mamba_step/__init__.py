"""The Mamba-1 decode step's two fused kernels (Triton): the conv-state update and the selective-state update."""
from hybrid.kernels.mamba_step.triton import conv_state_update, selective_state_update

__all__ = ["conv_state_update", "selective_state_update"]
