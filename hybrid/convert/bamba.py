"""Hugging Face transformers' Bamba (`BambaForCausalLM`, model_type "bamba", IBM's Mamba-2 hybrid) <-> a HybridLM of
2 blocks per Bamba layer: the mixer (S, or A at `attn_layer_indices`) then the SwiGLU feed-forward (F).

Bamba layer i = input_layernorm -> mamba | self_attn -> add ; pre_ff_layernorm -> feed_forward -> add, so

    model.layers.{i}.input_layernorm.weight     layers.{2i}.norm.weight
    model.layers.{i}.mamba.*                    layers.{2i}.mixer.*     (S: in_proj, conv1d, dt_bias, A_log, D, norm,
                                                                         out_proj)
    model.layers.{i}.self_attn.{q,k,v,o}_proj   layers.{2i}.mixer.*     (A: RoPE on half of each head)
    model.layers.{i}.pre_ff_layernorm.weight    layers.{2i+1}.norm.weight
    model.layers.{i}.feed_forward.*_proj        layers.{2i+1}.mixer.*   (F)
    model.embed_tokens.weight, model.final_layernorm.weight, lm_head.weight
"""
from __future__ import annotations

from collections.abc import Mapping

from hybrid.convert.links import Link, lm_head_link, rename, renames
from hybrid.convert.mamba2 import mamba2_checks, mixer_mlp_pairs_check, time_step_limit
from hybrid.convert.specs import check_supported, exact_expand, require, uniform_spec
from hybrid.model import HybridLM

MODEL_TYPE = "bamba"
ARCHITECTURE = "BambaForCausalLM"
ROPE_FRACTION = 0.5  # transformers hard-codes Bamba's partial_rotary_factor


def hybrid_args(cfg: Mapping, origin: str = "BambaConfig") -> dict:
    """HybridLM's constructor arguments for a BambaConfig (as a dict)."""
    d_model, n_heads = require(cfg, "hidden_size", origin), require(cfg, "num_attention_heads", origin)
    n_layers = require(cfg, "num_hidden_layers", origin)
    expand, heads = cfg.get("mamba_expand", 2), require(cfg, "mamba_n_heads", origin)
    head_dim = cfg.get("mamba_d_head", "auto")
    head_dim = expand * d_model // heads if head_dim == "auto" else head_dim
    rope = cfg.get("rope_parameters") or {}
    eps = cfg.get("rms_norm_eps", 1e-5)
    attn = set(cfg.get("attn_layer_indices") or [])
    check_supported([
        (cfg.get("hidden_act", "silu") == "silu", f"hidden_act={cfg.get('hidden_act')!r}: our blocks use silu"),
        (d_model % n_heads == 0 and cfg.get("head_dim") in (None, d_model // n_heads),
         f"head_dim={cfg.get('head_dim')}: our attention has head_dim = hidden_size / num_attention_heads"),
        (rope.get("rope_type", "default") == "default", f"rope_type={rope.get('rope_type')!r}: only plain RoPE"),
        (attn <= set(range(n_layers)), f"attn_layer_indices={sorted(attn)} outside 0..{n_layers - 1}"),
    ], origin)
    return dict(
        vocab_size=require(cfg, "vocab_size", origin), d_model=d_model,
        layout="".join(("A" if i in attn else "S") + "F" for i in range(n_layers)),
        blocks={"S": dict(d_state=cfg.get("mamba_d_state", 256), d_conv=cfg.get("mamba_d_conv", 4),
                          expand=exact_expand(heads * head_dim, d_model, origin), headdim=head_dim,
                          ngroups=cfg.get("mamba_n_groups", 1), chunk_size=cfg.get("mamba_chunk_size", 256),
                          dt_limit=time_step_limit(cfg.get("time_step_limit")),
                          bias=cfg.get("mamba_proj_bias", False), conv_bias=cfg.get("mamba_conv_bias", True),
                          rmsnorm_eps=eps),
                "A": dict(n_heads=n_heads, n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
                          rope_base=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
                          rope_fraction=float(rope.get("partial_rotary_factor", ROPE_FRACTION)),
                          bias=cfg.get("attention_bias", False)),
                "F": dict(d_hidden=require(cfg, "intermediate_size", origin), bias=cfg.get("mlp_bias", False))},
        tie_embeddings=cfg.get("tie_word_embeddings", False), norm_eps=eps, residual_in_fp32=False)


def links(model: HybridLM, source_keys=None) -> tuple[list[Link], set[str]]:
    """The links of `model` to a BambaForCausalLM state dict; no extras."""
    keys = list(model.state_dict(keep_vars=True))
    out = [rename("embedding.weight", "model.embed_tokens.weight"),
           rename("norm.weight", "model.final_layernorm.weight")]
    out.append(lm_head_link(model.lm_head.weight is model.embedding.weight))
    for i in range(len(model.pattern) // 2):
        mixer, ff, theirs = 2 * i, 2 * i + 1, f"model.layers.{i}."
        out.append(rename(f"layers.{mixer}.norm.weight", theirs + "input_layernorm.weight"))
        out += renames(keys, f"layers.{mixer}.mixer.", theirs + ("mamba." if model.pattern[mixer] == "S" else
                                                                 "self_attn."))
        out.append(rename(f"layers.{ff}.norm.weight", theirs + "pre_ff_layernorm.weight"))
        out += renames(keys, f"layers.{ff}.mixer.", theirs + "feed_forward.")
    return out, set()


def hf_config(model: HybridLM):
    """A transformers BambaConfig for `model`, or an error saying why the model does not fit one."""
    from transformers import BambaConfig
    target = "transformers' BambaConfig"
    p = model.pattern
    s, a, f = (uniform_spec(model, k, target) for k in "SAF")
    check_supported([
        mixer_mlp_pairs_check(p, s is not None, "Bamba"),
        *mamba2_checks(s, model.norm.eps),
        (a is None or (a["rope_base"] is not None and a["rope_fraction"] == ROPE_FRACTION),
         f"Bamba's attention rotates half of each head: set blocks.A.rope_fraction={ROPE_FRACTION} and a rope_base"),
        (f is None or f["activation"] == "swiglu", "Bamba's MLP is SwiGLU: blocks.F.activation=swiglu"),
        (not model.residual_in_fp32, "Bamba keeps the residual in the weights' dtype: residual_in_fp32=false"),
    ], target)
    kwargs = dict(num_attention_heads=a["n_heads"] if a else 1, num_key_value_heads=a["n_kv_heads"] if a else 1)
    if a:
        kwargs.update(attention_bias=a["bias"], rope_parameters=dict(rope_type="default", rope_theta=a["rope_base"]))
    if f:
        kwargs.update(intermediate_size=f["d_hidden"], mlp_bias=f["bias"])
    return BambaConfig(
        vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=len(p) // 2,
        attn_layer_indices=[i for i in range(len(p) // 2) if p[2 * i] == "A"],
        mamba_n_heads=s["nheads"], mamba_d_head=s["headdim"], mamba_n_groups=s["ngroups"], mamba_d_state=s["d_state"],
        mamba_d_conv=s["d_conv"], mamba_expand=exact_expand(s["d_inner"], model.d_model, target),
        mamba_chunk_size=s["chunk_size"], mamba_conv_bias=s["conv_bias"], mamba_proj_bias=s["in_bias"],
        time_step_limit=s["dt_limit"], rms_norm_eps=model.norm.eps, hidden_act="silu",
        tie_word_embeddings=model.lm_head.weight is model.embedding.weight, **kwargs)
