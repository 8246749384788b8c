"""Hugging Face transformers' Nemotron-H (`NemotronHForCausalLM`, model_type "nemotron_h") <-> HybridLM stacks of
S (Mamba-2), A (attention without positional embedding) and F (the ungated relu^2 MLP, `activation: relu2`).

A Nemotron-H layer is one pre-norm residual block whose mixer is a Mamba-2, an attention, an MLP or a MoE, as its
`hybrid_override_pattern` (Megatron's alphabet, M being Mamba-2) says, so layer i is our block i:

    backbone.embeddings.weight             embedding.weight     (`model.` for `backbone.` in transformers >= 5's
    backbone.layers.{i}.norm.weight        layers.{i}.norm.weight                        modules; files have either)
    backbone.layers.{i}.mixer.*            layers.{i}.mixer.*   (S: in_proj, conv1d, dt_bias, A_log, D, norm, out_proj;
                                                                 A: q/k/v/o_proj; F: up_proj, down_proj)
    backbone.norm_f.weight                 norm.weight
    lm_head.weight                         lm_head.weight       (untied by default)

Their Mamba-2 clamps dt to time_step_limit from transformers 5.25 on, and to (time_step_min, inf) before (it ignored
time_step_limit); import and export follow the installed version (`clamps_to_time_step_limit`), so that the logits
match it.
Not expressible here: the MoE layers (`E` in their pattern: shared experts, a sigmoid router with a score-correction
bias, which our E block does not have) and multi-token-prediction layers; both are refused by name.
"""
from __future__ import annotations

from collections.abc import Mapping

from hybrid import layout as layouts
from hybrid.convert.links import Link, lm_head_link, rename, renames
from hybrid.convert.mamba2 import mamba2_checks, time_step_limit
from hybrid.convert.specs import UnsupportedConfig, check_supported, exact_expand, require, uniform_spec
from hybrid.model import HybridLM

MODEL_TYPE = "nemotron_h"
ARCHITECTURE = "NemotronHForCausalLM"
_LAYER_TYPES = {"linear_attention": "M", "mamba": "M", "full_attention": "*", "attention": "*", "mlp": "-",
                "moe": "E"}  # transformers' layer names (new and old) -> Megatron's alphabet


def megatron_pattern(cfg: Mapping, origin: str) -> str:
    """The layer pattern in Megatron's alphabet, from hybrid_override_pattern or layers_block_type."""
    if isinstance(cfg.get("hybrid_override_pattern"), str):
        return cfg["hybrid_override_pattern"]
    types = cfg.get("layers_block_type") or cfg.get("layer_types")
    if not types:
        raise UnsupportedConfig(f"reading {origin}", ["config has neither hybrid_override_pattern nor "
                                                      "layers_block_type"])
    unknown = sorted({t for t in types if t not in _LAYER_TYPES})
    if unknown:
        raise UnsupportedConfig(f"reading {origin}", [f"unknown layer types {unknown}; known: {sorted(_LAYER_TYPES)}"])
    return "".join(_LAYER_TYPES[t] for t in types)


def clamps_to_time_step_limit() -> bool:
    """Whether the installed transformers' Nemotron-H clamps dt to config.time_step_limit (5.25 on; no transformers:
    the current behaviour) rather than to (time_step_min, inf)."""
    try:
        import transformers
        from packaging.version import Version
    except ImportError:
        return True
    return Version(transformers.__version__).release >= (5, 25)


def hybrid_args(cfg: Mapping, origin: str = "NemotronHConfig") -> dict:
    """HybridLM's constructor arguments for a NemotronHConfig (as a dict)."""
    d_model, n_heads = require(cfg, "hidden_size", origin), require(cfg, "num_attention_heads", origin)
    pattern = layouts.from_megatron(megatron_pattern(cfg, origin))
    heads, head_dim = require(cfg, "mamba_num_heads", origin), require(cfg, "mamba_head_dim", origin)
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    att_head_dim = cfg.get("head_dim")
    check_supported([
        ("E" not in pattern, "MoE layers ('E' in hybrid_override_pattern): Nemotron-H's experts (shared experts, a "
                             "sigmoid router with a score-correction bias) have no form in our E block"),
        (not cfg.get("num_nextn_predict_layers"), f"num_nextn_predict_layers={cfg.get('num_nextn_predict_layers')}: "
                                                  f"multi-token-prediction layers are not supported"),
        (cfg.get("mlp_hidden_act", "relu2") == "relu2", f"mlp_hidden_act={cfg.get('mlp_hidden_act')!r}: our "
                                                        f"ungated MLP is relu2"),
        (cfg.get("mamba_hidden_act", "silu") == "silu", f"mamba_hidden_act={cfg.get('mamba_hidden_act')!r}: "
                                                        f"our Mamba-2 uses silu"),
        (cfg.get("sliding_window") is None, f"sliding_window={cfg.get('sliding_window')}: our attention is global"),
        (d_model % n_heads == 0 and att_head_dim in (None, d_model // n_heads),
         f"head_dim={att_head_dim}: our attention has head_dim = hidden_size / num_attention_heads"),
    ], origin)
    return dict(
        vocab_size=require(cfg, "vocab_size", origin), d_model=d_model, layout=pattern,
        blocks={"S": dict(d_state=cfg.get("ssm_state_size", 128), d_conv=cfg.get("conv_kernel", 4),
                          expand=exact_expand(heads * head_dim, d_model, origin), headdim=head_dim,
                          ngroups=cfg.get("n_groups", 1), chunk_size=cfg.get("chunk_size", 128),
                          dt_min=cfg.get("time_step_min", 1e-3), dt_max=cfg.get("time_step_max", 0.1),
                          dt_init_floor=cfg.get("time_step_floor", 1e-4),
                          dt_limit=time_step_limit(cfg.get("time_step_limit")) if clamps_to_time_step_limit()
                          else (cfg.get("time_step_min", 1e-3), float("inf")), bias=cfg.get("use_bias", False),
                          conv_bias=cfg.get("use_conv_bias", True), rmsnorm_eps=eps),
                "A": dict(n_heads=n_heads, n_kv_heads=cfg.get("num_key_value_heads") or n_heads, rope_base=None,
                          bias=False),  # transformers builds Nemotron-H's q/k/v/o without bias
                "F": dict(d_hidden=require(cfg, "intermediate_size", origin), bias=cfg.get("mlp_bias", False),
                          activation="relu2")},
        tie_embeddings=cfg.get("tie_word_embeddings", False), norm_eps=eps,
        residual_in_fp32=cfg.get("residual_in_fp32", False))


def links(model: HybridLM, source_keys=None) -> tuple[list[Link], set[str]]:
    """The links of `model` to a NemotronHForCausalLM state dict (layer i is our block i); no extras. Its body is
    `model.` in memory (transformers >= 5) and `backbone.` in published files: whichever `source_keys` has."""
    keys = list(model.state_dict(keep_vars=True))
    body = "backbone." if source_keys is not None and "backbone.embeddings.weight" in source_keys else "model."
    out = [rename("embedding.weight", body + "embeddings.weight"), rename("norm.weight", body + "norm_f.weight")]
    out.append(lm_head_link(model.lm_head.weight is model.embedding.weight))
    for i in range(len(model.pattern)):
        out.append(rename(f"layers.{i}.norm.weight", f"{body}layers.{i}.norm.weight"))
        out += renames(keys, f"layers.{i}.mixer.", f"{body}layers.{i}.mixer.")
    return out, set()


def hf_config(model: HybridLM):
    """A transformers NemotronHConfig for `model`, or an error saying why the model does not fit one."""
    from transformers import NemotronHConfig
    target = "transformers' NemotronHConfig"
    p = model.pattern
    s, a, f = (uniform_spec(model, k, target) for k in "SAF")
    to_limit = clamps_to_time_step_limit()
    check_supported([
        (set(p) <= set("SAF") and "S" in p, f"pattern {p!r}: a Nemotron-H stack has Mamba-2 (S), attention (A) "
                                            f"and MLP (F) layers only (its MoE is not our E; Mamba-1 M has no form)"),
        *mamba2_checks(s, model.norm.eps),
        (s is None or to_limit or s["dt_limit"][1] == float("inf"),
         f"dt_limit={s and s['dt_limit']}: transformers < 5.25's Nemotron-H clamps dt to (time_step_min, inf), so "
         f"the upper limit must be inf"),
        (a is None or a["rope_base"] is None, "Nemotron-H's attention has no positional embedding: set "
                                              "blocks.A.rope_base=null"),
        (a is None or not a["bias"], "Nemotron-H's attention has no bias"),
        (f is None or f["activation"] == "relu2", "Nemotron-H's MLP is ungated relu^2: set blocks.F.activation=relu2"),
    ], target)
    kwargs = dict(num_attention_heads=a["n_heads"] if a else 1, num_key_value_heads=a["n_kv_heads"] if a else 1,
                  head_dim=a["head_dim"] if a else model.d_model)
    if f:
        kwargs.update(intermediate_size=f["d_hidden"], mlp_bias=f["bias"])
    dt_kwargs = dict(time_step_limit=tuple(s["dt_limit"])) if to_limit else dict(
        time_step_min=s["dt_limit"][0])
    return NemotronHConfig(
        vocab_size=model.vocab_size, hidden_size=model.d_model, hybrid_override_pattern=layouts.to_megatron(p),
        ssm_state_size=s["d_state"], mamba_num_heads=s["nheads"], mamba_head_dim=s["headdim"], n_groups=s["ngroups"],
        conv_kernel=s["d_conv"], chunk_size=s["chunk_size"], use_bias=s["in_bias"], **dt_kwargs,
        use_conv_bias=s["conv_bias"], expand=exact_expand(s["d_inner"], model.d_model, target),
        mlp_hidden_act="relu2", layer_norm_epsilon=model.norm.eps, residual_in_fp32=model.residual_in_fp32,
        tie_word_embeddings=model.lm_head.weight is model.embedding.weight, num_nextn_predict_layers=0, **kwargs)
