"""Real checkpoints in and out: Hugging Face transformers' Mamba, Mamba-2, Jamba, Bamba, Nemotron-H and Granite 4.0
hybrid (GraniteMoeHybrid, dense), mamba-ssm (Mamba-1 and Mamba-2 layers), and our own format.

    from_transformers(model_or_dir) -> HybridLM      Mamba(2)/Jamba/Bamba/NemotronH/GraniteMoeHybridForCausalLM (hf.py)
    to_transformers(model, out_dir=None)             back to those, save_pretrained-loadable  (hf.py)
    from_mamba_ssm(dir) -> HybridLM                  mamba-ssm MambaLMHeadModel directories   (checkpoint.py)
    save_checkpoint(model, out_dir)                  model.safetensors + hybrid_config.json   (checkpoint.py)
    load_checkpoint(dir) -> HybridLM                 any of the above, detected by its config (checkpoint.py)

Every weight is mapped by name with its shape checked (links.py); a checkpoint that does not fit raises one
ConversionError listing every missing, unmapped or mis-shaped tensor, never a partial load. A config we cannot
express raises UnsupportedConfig naming the setting. CLI: `python -m hybrid.convert SRC OUT_DIR`.
"""
from hybrid.convert.checkpoint import from_mamba_ssm, load_checkpoint, save_checkpoint
from hybrid.convert.hf import from_transformers, to_transformers
from hybrid.convert.links import ConversionError
from hybrid.convert.specs import UnsupportedConfig

__all__ = ["ConversionError", "UnsupportedConfig", "from_mamba_ssm", "from_transformers", "load_checkpoint",
           "save_checkpoint", "to_transformers"]
