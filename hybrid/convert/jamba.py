"""Hugging Face transformers' Jamba (`JambaForCausalLM`, model_type "jamba") <-> a HybridLM of 2 blocks per
Jamba layer: the mixer (M or A) then the feed-forward (F or E), as `hybrid.layout.from_jamba` lays them out.

Jamba layer i = input_layernorm -> mixer -> add ; pre_ff_layernorm -> feed_forward -> add, so

    model.layers.{i}.input_layernorm.weight     layers.{2i}.norm.weight
    model.layers.{i}.mamba.*                    layers.{2i}.mixer.*     (M; dt/b/c_layernorm: dt_bc_norm=True)
    model.layers.{i}.self_attn.{q,k,v,o}_proj   layers.{2i}.mixer.*     (A; no RoPE, no bias)
    model.layers.{i}.pre_ff_layernorm.weight    layers.{2i+1}.norm.weight
    model.layers.{i}.feed_forward.*_proj        layers.{2i+1}.mixer.*   (F)
    model.layers.{i}.feed_forward.router.weight layers.{2i+1}.mixer.router.weight   (E)
    ...feed_forward.experts.gate_up_proj [E, 2I, H]   experts.{e}.gate_proj / up_proj   (transformers >= 5, in
    ...feed_forward.experts.down_proj    [E, H, I]    experts.{e}.down_proj              memory)
    ...feed_forward.experts.{e}.{gate,up,down}_proj.weight                               (files, older versions)
    model.embed_tokens.weight, model.final_layernorm.weight, lm_head.weight

Jamba's router takes the top-k of the softmax without renormalising them (our MoE renormalize=False).
"""
from __future__ import annotations

from collections.abc import Mapping

from hybrid import layout as layouts
from hybrid.convert.links import Link, lm_head_link, rename, renames, stacked, stacked_pairs
from hybrid.convert.specs import UnsupportedConfig, check_supported, exact_expand, require, uniform_spec
from hybrid.model import HybridLM

MODEL_TYPE = "jamba"
ARCHITECTURE = "JambaForCausalLM"


def hybrid_args(cfg: Mapping, origin: str = "JambaConfig") -> dict:
    """HybridLM's constructor arguments for a JambaConfig (as a dict)."""
    d_model, n_heads = require(cfg, "hidden_size", origin), require(cfg, "num_attention_heads", origin)
    n_layers, n_experts = require(cfg, "num_hidden_layers", origin), cfg.get("num_experts", 16)
    eps = cfg.get("rms_norm_eps", 1e-6)
    head_dim = cfg.get("head_dim")
    check_supported([
        (cfg.get("hidden_act", "silu") == "silu", f"hidden_act={cfg.get('hidden_act')!r}: our blocks use silu"),
        (d_model % n_heads == 0, f"hidden_size={d_model} is not divisible by num_attention_heads={n_heads}"),
        (head_dim in (None, d_model // n_heads), (f"head_dim={head_dim}: our attention has head_dim = "
                                                  f"hidden_size / num_attention_heads = {d_model // n_heads}")),
    ], origin)
    jamba = dict(n_layers=n_layers, attn_layer_period=cfg.get("attn_layer_period", 8),
                 attn_layer_offset=cfg.get("attn_layer_offset", 4),
                 expert_layer_period=cfg.get("expert_layer_period", 2),
                 expert_layer_offset=cfg.get("expert_layer_offset", 1))
    # Jamba gives a layer experts only when num_experts > 1; with one expert every feed-forward is an MLP
    layout = {"jamba": jamba} if n_experts > 1 else layouts.from_jamba(**jamba).replace("E", "F")
    d_hidden = require(cfg, "intermediate_size", origin)
    return dict(
        vocab_size=require(cfg, "vocab_size", origin), d_model=d_model, layout=layout,
        blocks={"M": dict(d_state=cfg.get("mamba_d_state", 16), d_conv=cfg.get("mamba_d_conv", 4),
                          expand=cfg.get("mamba_expand", 2), dt_rank=cfg.get("mamba_dt_rank", "auto"),
                          conv_bias=cfg.get("mamba_conv_bias", True), bias=cfg.get("mamba_proj_bias", False),
                          dt_bc_norm=True, dt_bc_norm_eps=eps),
                "A": dict(n_heads=n_heads, n_kv_heads=cfg.get("num_key_value_heads") or n_heads, rope_base=None,
                          bias=False),
                "F": dict(d_hidden=d_hidden, bias=False),
                "E": dict(n_experts=n_experts, top_k=cfg.get("num_experts_per_tok", 2), d_hidden=d_hidden,
                          renormalize=False, bias=False)},
        tie_embeddings=cfg.get("tie_word_embeddings", False), norm_eps=eps, residual_in_fp32=False)


def _fused_experts(i: int, source_keys) -> bool:
    return source_keys is not None and f"model.layers.{i}.feed_forward.experts.gate_up_proj" in source_keys


def links(model: HybridLM, source_keys=None) -> tuple[list[Link], set[str]]:
    """The links of `model` to a JambaForCausalLM state dict, experts fused or per expert as `source_keys`
    has them (per expert when None); and the source tensors that may be present but are not ours (none)."""
    keys = list(model.state_dict(keep_vars=True))
    out = [rename("embedding.weight", "model.embed_tokens.weight"),
           rename("norm.weight", "model.final_layernorm.weight")]
    out.append(lm_head_link(model.lm_head.weight is model.embedding.weight))
    for i in range(len(model.pattern) // 2):
        mixer, ff = 2 * i, 2 * i + 1
        theirs = f"model.layers.{i}."
        out.append(rename(f"layers.{mixer}.norm.weight", theirs + "input_layernorm.weight"))
        kind = "mamba." if model.pattern[mixer] == "M" else "self_attn."
        out += renames(keys, f"layers.{mixer}.mixer.", theirs + kind)
        out.append(rename(f"layers.{ff}.norm.weight", theirs + "pre_ff_layernorm.weight"))
        ours = f"layers.{ff}.mixer."
        if model.pattern[ff] == "E" and _fused_experts(i, source_keys):
            n = model.layers[ff].mixer.n_experts
            out.append(rename(ours + "router.weight", theirs + "feed_forward.router.weight"))
            out.append(stacked_pairs([f"{ours}experts.{e}.gate_proj.weight" for e in range(n)],
                                     [f"{ours}experts.{e}.up_proj.weight" for e in range(n)],
                                     theirs + "feed_forward.experts.gate_up_proj"))
            out.append(stacked([f"{ours}experts.{e}.down_proj.weight" for e in range(n)],
                               theirs + "feed_forward.experts.down_proj"))
        else:  # an MLP, or experts one by one: the same names under feed_forward.
            out += renames(keys, ours, theirs + "feed_forward.")
    return out, set()


def _period_offset(flags: list[bool], what: str) -> tuple[int, int]:
    """The (period, offset) with flags[i] == (i % period == offset) for all i; none set -> one that never
    fires. Raises when the flagged layers are not periodic."""
    n = len(flags)
    if not any(flags):
        return n + 1, n
    offset = flags.index(True)
    for period in range(offset + 1, n + 1):
        if all(f == (i % period == offset) for i, f in enumerate(flags)):
            return period, offset
    at = [i for i, f in enumerate(flags) if f]
    raise UnsupportedConfig("transformers' JambaConfig", [
        f"{what} at Jamba layers {at} is not periodic: Jamba places it where layer % period == offset"])


def hf_config(model: HybridLM):
    """A transformers JambaConfig for `model`, or an error saying why the model does not fit one."""
    from transformers import JambaConfig
    target = "transformers' JambaConfig"
    p = model.pattern
    odd = [f"position {j} is {s!r}" for j, s in enumerate(p) if s not in ("MA" if j % 2 == 0 else "FE")]
    check_supported([(len(p) % 2 == 0 and not odd,
                      f"pattern {p!r}: a Jamba layer is a mixer (M or A) then a feed-forward (F or E), so the "
                      f"pattern alternates them" + (f"; {', '.join(odd)}" if odd else "; its length is odd"))],
                    target)
    m, a = uniform_spec(model, "M", target), uniform_spec(model, "A", target)
    f, e = uniform_spec(model, "F", target), uniform_spec(model, "E", target)
    hidden = {s["d_hidden"] for s in (f, e) if s}
    check_supported([
        (m is None or m["selective"], "selective=False (LTI) Mamba blocks have no Jamba form"),
        (m is None or m["dt_bc_norm"], "Jamba's Mamba has RMSNorms on dt, B and C: set blocks.M.dt_bc_norm=true"),
        (m is None or not m["dt_bc_norm"] or m["dt_bc_norm_eps"] == model.norm.eps,
         f"Jamba has one rms_norm_eps: dt_bc_norm_eps={m and m['dt_bc_norm_eps']} != norm_eps={model.norm.eps}"),
        (m is None or m["in_bias"] == m["out_bias"], "Mamba in_proj and out_proj bias must agree (mamba_proj_bias)"),
        (a is None or a["rope_base"] is None, ("Jamba's attention has no positional embedding: set "
                                               "blocks.A.rope_base=null")),
        (a is None or not a["bias"], "Jamba's attention has no bias"),
        (len(hidden) <= 1, f"Jamba has one intermediate_size for MLP and experts; ours: {sorted(hidden)}"),
        (not any(s and s["bias"] for s in (f, e)), "Jamba's MLP and experts have no bias"),
        (f is None or f["activation"] == "swiglu", "Jamba's MLP is SwiGLU: blocks.F.activation=swiglu"),
        (e is None or not e["renormalize"], ("Jamba's router does not renormalise the top-k weights: set "
                                             "blocks.E.renormalize=false")),
        (not model.residual_in_fp32, "Jamba keeps the residual in the weights' dtype: residual_in_fp32=false"),
    ], target)
    n_layers = len(p) // 2
    attn_period, attn_offset = _period_offset([p[2 * i] == "A" for i in range(n_layers)], "attention")
    expert_period, expert_offset = _period_offset([p[2 * i + 1] == "E" for i in range(n_layers)], "MoE")
    kwargs = {}
    if m:
        kwargs.update(mamba_d_state=m["d_state"], mamba_d_conv=m["d_conv"], mamba_dt_rank=m["dt_rank"],
                      mamba_expand=exact_expand(m["d_inner"], model.d_model, target),
                      mamba_conv_bias=m["conv_bias"], mamba_proj_bias=m["in_bias"])
    # with no block of a kind its settings are unused; keep them valid for any d_model (1 head)
    kwargs.update(num_attention_heads=a["n_heads"] if a else 1, num_key_value_heads=a["n_kv_heads"] if a else 1)
    if e:
        kwargs.update(num_experts=e["n_experts"], num_experts_per_tok=e["top_k"])
    if hidden:
        kwargs.update(intermediate_size=hidden.pop())
    return JambaConfig(
        vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=n_layers,
        attn_layer_period=attn_period, attn_layer_offset=attn_offset, expert_layer_period=expert_period,
        expert_layer_offset=expert_offset, rms_norm_eps=model.norm.eps, hidden_act="silu",
        tie_word_embeddings=model.lm_head.weight is model.embedding.weight, **kwargs)
