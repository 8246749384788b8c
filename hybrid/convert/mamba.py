"""Hugging Face transformers' Mamba (`MambaForCausalLM`, model_type "mamba") <-> HybridLM "M" * n_layers.

Their layer i is one pre-norm residual block (RMSNorm -> MambaMixer -> add), our block i; the mixer's
parameters carry our names (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj).

    backbone.embeddings.weight             embedding.weight        (old files: backbone.embedding.weight)
    backbone.layers.{i}.norm.weight        layers.{i}.norm.weight
    backbone.layers.{i}.mixer.*            layers.{i}.mixer.*
    backbone.norm_f.weight                 norm.weight
    lm_head.weight                         lm_head.weight          (tied to the embedding by default)
"""
from __future__ import annotations

from collections.abc import Mapping

from hybrid.convert.links import Link, lm_head_link, rename, renames
from hybrid.convert.specs import check_supported, exact_expand, require, uniform_spec
from hybrid.model import HybridLM

MODEL_TYPE = "mamba"
ARCHITECTURE = "MambaForCausalLM"


def hybrid_args(cfg: Mapping, origin: str = "MambaConfig") -> dict:
    """HybridLM's constructor arguments for a MambaConfig (as a dict)."""
    d_model, n_layers = require(cfg, "hidden_size", origin), require(cfg, "num_hidden_layers", origin)
    expand = cfg.get("expand", 2)
    check_supported([(cfg.get("hidden_act", "silu") == "silu",
                      f"hidden_act={cfg.get('hidden_act')!r}: our Mamba block uses silu")], origin)
    return dict(
        vocab_size=require(cfg, "vocab_size", origin), d_model=d_model, layout="M" * n_layers,
        blocks={"M": dict(d_state=cfg.get("state_size", 16), d_conv=cfg.get("conv_kernel", 4),
                          expand=exact_expand(int(expand * d_model), d_model, origin),
                          dt_rank=cfg.get("time_step_rank", "auto"), dt_min=cfg.get("time_step_min", 1e-3),
                          dt_max=cfg.get("time_step_max", 0.1), dt_init_floor=cfg.get("time_step_floor", 1e-4),
                          conv_bias=cfg.get("use_conv_bias", True), bias=cfg.get("use_bias", False))},
        tie_embeddings=cfg.get("tie_word_embeddings", True), norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=cfg.get("residual_in_fp32", True))


def links(model: HybridLM, source_keys=None) -> tuple[list[Link], set[str]]:
    """The links of `model` (built from hybrid_args) to a MambaForCausalLM state dict, and the source
    tensors that may be present but are not ours (none)."""
    keys = list(model.state_dict(keep_vars=True))
    embed = "backbone.embeddings.weight"
    if source_keys is not None and embed not in source_keys and "backbone.embedding.weight" in source_keys:
        embed = "backbone.embedding.weight"  # the name mamba-ssm and old transformers files use
    out = [rename("embedding.weight", embed), rename("norm.weight", "backbone.norm_f.weight")]
    out.append(lm_head_link(model.lm_head.weight is model.embedding.weight))
    for i in range(len(model.pattern)):
        out.append(rename(f"layers.{i}.norm.weight", f"backbone.layers.{i}.norm.weight"))
        out += renames(keys, f"layers.{i}.mixer.", f"backbone.layers.{i}.mixer.")
    return out, set()


def hf_config(model: HybridLM):
    """A transformers MambaConfig for `model`, or an error saying why the model does not fit one."""
    from transformers import MambaConfig
    target = "transformers' MambaConfig"
    spec = uniform_spec(model, "M", target)
    check_supported([
        (set(model.pattern) == {"M"}, (f"pattern {model.pattern!r}: a Mamba model has only Mamba blocks "
                                       f"('M'); export mixed stacks as Jamba")),
        (spec is None or spec["selective"], "selective=False (LTI) blocks have no Hugging Face form"),
        (spec is None or not spec["dt_bc_norm"], "dt_bc_norm=True is Jamba's Mamba; MambaConfig has no dt/B/C norms"),
        (spec is None or spec["in_bias"] == spec["out_bias"], "in_proj and out_proj bias must agree (use_bias)"),
    ], target)
    return MambaConfig(
        vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=len(model.pattern),
        state_size=spec["d_state"], conv_kernel=spec["d_conv"],
        expand=exact_expand(spec["d_inner"], model.d_model, target), time_step_rank=spec["dt_rank"],
        use_bias=spec["in_bias"], use_conv_bias=spec["conv_bias"], hidden_act="silu",
        layer_norm_epsilon=model.norm.eps, residual_in_fp32=model.residual_in_fp32,
        tie_word_embeddings=model.lm_head.weight is model.embedding.weight)
