"""Hugging Face transformers' Granite 4.0 hybrid (`GraniteMoeHybridForCausalLM`, model_type "granitemoehybrid",
IBM's Mamba-2 / attention hybrid) <-> a HybridLM of 2 blocks per Granite layer: the mixer (S, or A where
layer_types says attention) then the shared SwiGLU MLP (F). Dense configs only (num_local_experts = 0).

Granite layer i = input_layernorm -> mamba | self_attn -> add (times r) ; post_attention_layernorm -> shared_mlp ->
add (times r), so

    model.layers.{i}.input_layernorm.weight           layers.{2i}.norm.weight
    model.layers.{i}.mamba.*                          layers.{2i}.mixer.*   (S; out_proj times r)
    model.layers.{i}.self_attn.{q,k,v,o}_proj         layers.{2i}.mixer.*   (A: full RoPE or none; q_proj times
                                                                             attention_multiplier * sqrt(head_dim),
                                                                             o_proj times r)
    model.layers.{i}.post_attention_layernorm.weight  layers.{2i+1}.norm.weight
    model.layers.{i}.shared_mlp.input_linear.weight   layers.{2i+1}.mixer.{gate_proj, up_proj}.weight (rows)
    model.layers.{i}.shared_mlp.output_linear.weight  layers.{2i+1}.mixer.down_proj.weight (times r)
    model.embed_tokens.weight                         embedding.weight      (times embedding_multiplier m)
    model.norm.weight                                 norm.weight           (divided by logits_scaling, and by m
    lm_head.weight                                    lm_head.weight         when the head is tied to the embedding)

Granite's four scalar multipliers (r = residual_multiplier) have no setting of ours: the import folds each into the
linear weights it multiplies (exact up to rounding), and the export writes the identity multipliers (1, and
attention_multiplier = 1 / sqrt(head_dim)). So unit-multiplier models round-trip bit for bit; others keep their
function, not their tensors. Not expressible: the MoE layers (num_local_experts > 0: Granite adds a shared MLP
to top-k experts, which our E block does not have), refused by name.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from hybrid.convert.links import Link, concat_rows, rename, renames
from hybrid.convert.mamba2 import mamba2_checks, mixer_mlp_pairs_check, time_step_limit
from hybrid.convert.specs import UnsupportedConfig, check_supported, exact_expand, require, uniform_spec
from hybrid.model import HybridLM

MODEL_TYPE = "granitemoehybrid"
ARCHITECTURE = "GraniteMoeHybridForCausalLM"
LINKS_READ_CONFIG = True  # links(model, keys, cfg): the multipliers are folded into the weights on import
_MIXERS = {"mamba": "S", "linear_attention": "S", "attention": "A", "full_attention": "A"}  # old and new names


def layer_symbols(cfg: Mapping, n_layers: int, origin: str) -> str:
    """One mixer symbol (S or A) per Granite layer, from layer_types (absent: all Mamba-2, as transformers)."""
    types = cfg.get("layer_types") or cfg.get("layers_block_type") or ["mamba"] * n_layers
    unknown = sorted({t for t in types if t not in _MIXERS})
    if unknown or len(types) != n_layers:
        raise UnsupportedConfig(f"reading {origin}", [f"layer_types {list(types)}: want {n_layers} of "
                                                      f"{sorted(_MIXERS)}"])
    return "".join(_MIXERS[t] for t in types)


def hybrid_args(cfg: Mapping, origin: str = "GraniteMoeHybridConfig") -> dict:
    """HybridLM's constructor arguments for a GraniteMoeHybridConfig (as a dict)."""
    d_model, n_heads = require(cfg, "hidden_size", origin), require(cfg, "num_attention_heads", origin)
    n_layers = require(cfg, "num_hidden_layers", origin)
    expand, heads = cfg.get("mamba_expand", 2), require(cfg, "mamba_n_heads", origin)
    head_dim = cfg.get("mamba_d_head", "auto")
    head_dim = expand * d_model // heads if head_dim == "auto" else head_dim
    rope = cfg.get("rope_parameters") or {}
    position = cfg.get("position_embedding_type")
    eps = cfg.get("rms_norm_eps", 1e-6)
    check_supported([
        (not cfg.get("num_local_experts"), f"num_local_experts={cfg.get('num_local_experts')}: Granite's MoE "
                                           f"(top-k experts plus a shared MLP) has no form in our E block"),
        (cfg.get("hidden_act", "silu") == "silu", f"hidden_act={cfg.get('hidden_act')!r}: our blocks use silu"),
        (position in (None, "nope", "rope"), f"position_embedding_type={position!r}: allowed None or 'rope'"),
        (rope.get("rope_type", "default") == "default", f"rope_type={rope.get('rope_type')!r}: only plain RoPE"),
        (d_model % n_heads == 0 and cfg.get("head_dim") in (None, d_model // n_heads),
         f"head_dim={cfg.get('head_dim')}: our attention has head_dim = hidden_size / num_attention_heads"),
    ], origin)
    mixers = layer_symbols(cfg, n_layers, origin)
    return dict(
        vocab_size=require(cfg, "vocab_size", origin), d_model=d_model, layout="".join(m + "F" for m in mixers),
        blocks={"S": dict(d_state=cfg.get("mamba_d_state", 256), d_conv=cfg.get("mamba_d_conv", 4),
                          expand=exact_expand(heads * head_dim, d_model, origin), headdim=head_dim,
                          ngroups=cfg.get("mamba_n_groups", 1), chunk_size=cfg.get("mamba_chunk_size", 256),
                          dt_limit=time_step_limit(cfg.get("time_step_limit")),
                          bias=cfg.get("mamba_proj_bias", False), conv_bias=cfg.get("mamba_conv_bias", True),
                          rmsnorm_eps=eps),
                "A": dict(n_heads=n_heads, n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
                          rope_base=float(rope.get("rope_theta", 10000.0)) if position == "rope" else None,
                          bias=cfg.get("attention_bias", False)),
                "F": dict(d_hidden=require(cfg, "shared_intermediate_size", origin), bias=False)},
        tie_embeddings=cfg.get("tie_word_embeddings", False), norm_eps=eps, residual_in_fp32=False)


def scaled(ours: str, theirs: str, factor: float, tied: bool = False) -> Link:
    """ours = theirs * factor (a multiplier of theirs folded into a weight of ours); factor 1 copies bit for bit."""
    if factor == 1:
        return rename(ours, theirs, tied=tied)
    return Link((ours,), (theirs,), to_ours=lambda t: [t[0] * factor], to_theirs=lambda t: [t[0] / factor],
                tied=tied)


def links(model: HybridLM, source_keys=None, cfg: Mapping | None = None) -> tuple[list[Link], set[str]]:
    """The links of `model` to a GraniteMoeHybridForCausalLM state dict, the multipliers of `cfg` folded in (None,
    on export: the identity multipliers); no extras."""
    cfg = cfg or {}
    m, r = cfg.get("embedding_multiplier", 1.0), cfg.get("residual_multiplier", 1.0)
    tied = model.lm_head.weight is model.embedding.weight
    logits_div = cfg.get("logits_scaling", 1.0) * (m if tied else 1.0)
    keys = list(model.state_dict(keep_vars=True))
    out = [scaled("embedding.weight", "model.embed_tokens.weight", m),
           scaled("norm.weight", "model.norm.weight", 1 / logits_div)]
    out.append(scaled("embedding.weight", "lm_head.weight", m, tied=True) if tied else
               rename("lm_head.weight", "lm_head.weight"))
    for i in range(len(model.pattern) // 2):
        mixer, ff, theirs = 2 * i, 2 * i + 1, f"model.layers.{i}."
        attn = model.pattern[mixer] == "A"
        q = cfg.get("attention_multiplier", 1.0) * math.sqrt(model.layers[mixer].mixer.head_dim) if attn and cfg else 1
        q = 1 if math.isclose(q, 1, rel_tol=1e-12) else q  # our 1 / sqrt(head_dim), as the export writes it
        out.append(rename(f"layers.{mixer}.norm.weight", theirs + "input_layernorm.weight"))
        our_mixer, their_mixer = f"layers.{mixer}.mixer.", theirs + ("self_attn." if attn else "mamba.")
        for link in renames(keys, our_mixer, their_mixer):
            name = link.ours[0][len(our_mixer):]
            factor = r if name.startswith(("o_proj.", "out_proj.")) else q if name.startswith("q_proj.") else 1
            out.append(scaled(link.ours[0], link.theirs[0], factor))
        out.append(rename(f"layers.{ff}.norm.weight", theirs + "post_attention_layernorm.weight"))
        f = model.layers[ff].mixer
        out.append(concat_rows([f"layers.{ff}.mixer.gate_proj.weight", f"layers.{ff}.mixer.up_proj.weight"],
                               theirs + "shared_mlp.input_linear.weight", [f.up_proj.out_features] * 2))
        out.append(scaled(f"layers.{ff}.mixer.down_proj.weight", theirs + "shared_mlp.output_linear.weight", r))
    return out, set()


def hf_config(model: HybridLM):
    """A transformers GraniteMoeHybridConfig for `model`, or an error saying why the model does not fit one."""
    from transformers import GraniteMoeHybridConfig
    target = "transformers' GraniteMoeHybridConfig"
    p = model.pattern
    s, a, f = (uniform_spec(model, k, target) for k in "SAF")
    check_supported([
        mixer_mlp_pairs_check(p, s is not None, "Granite"),
        *mamba2_checks(s, model.norm.eps),
        (a is None or a["rope_fraction"] == 1, f"rope_fraction={a and a['rope_fraction']}: Granite rotates whole "
                                               f"heads (or none: rope_base=null)"),
        (f is None or (f["activation"] == "swiglu" and not f["bias"]),
         "Granite's shared MLP is SwiGLU without bias: blocks.F.activation=swiglu, bias=false"),
        (not model.residual_in_fp32, "Granite keeps the residual in the weights' dtype: residual_in_fp32=false"),
    ], target)
    kwargs = dict(num_attention_heads=a["n_heads"] if a else 1, num_key_value_heads=a["n_kv_heads"] if a else 1)
    if a:
        kwargs.update(attention_bias=a["bias"], attention_multiplier=1 / math.sqrt(a["head_dim"]))
        if a["rope_base"] is not None:
            kwargs.update(position_embedding_type="rope",
                          rope_parameters=dict(rope_type="default", rope_theta=a["rope_base"]))
    return GraniteMoeHybridConfig(
        vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=len(p) // 2,
        layer_types=["attention" if c == "A" else "mamba" for c in p[::2]], num_local_experts=0,
        shared_intermediate_size=f["d_hidden"], intermediate_size=f["d_hidden"],
        mamba_n_heads=s["nheads"], mamba_d_head=s["headdim"], mamba_n_groups=s["ngroups"], mamba_d_state=s["d_state"],
        mamba_d_conv=s["d_conv"], mamba_expand=exact_expand(s["d_inner"], model.d_model, target),
        mamba_chunk_size=s["chunk_size"], mamba_conv_bias=s["conv_bias"], mamba_proj_bias=s["in_bias"],
        time_step_limit=s["dt_limit"], rms_norm_eps=model.norm.eps, hidden_act="silu",
        embedding_multiplier=1.0, residual_multiplier=1.0, logits_scaling=1.0,
        tie_word_embeddings=model.lm_head.weight is model.embedding.weight, **kwargs)
