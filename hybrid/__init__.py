"""hybrid: hybrid sequence models (Mamba, attention, MLP, MoE blocks) — layouts, kernels, training, sweeps."""
__version__ = "0.1.0"
