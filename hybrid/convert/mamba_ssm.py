"""mamba-ssm's `MambaLMHeadModel` checkpoints (config.json with d_model, n_layer, ssm_cfg, attn_layer_idx,
attn_cfg ... + pytorch_model.bin or safetensors) -> HybridLM. Import only.

Layer i of mamba-ssm is a mixer (Mamba1 -> our M, or Mamba2 -> our S, as ssm_cfg.layer says; MHA where i is in
attn_layer_idx) and, when d_intermediate > 0, a gated MLP: one or two of our blocks (j = i, or j = 2i and 2i+1):

    backbone.embedding.weight            embedding.weight
    backbone.layers.{i}.norm.weight      layers.{j}.norm.weight
    backbone.layers.{i}.mixer.*          layers.{j}.mixer.*                          (Mamba1, Mamba2: same names)
    backbone.layers.{i}.mixer.in_proj    layers.{j}.mixer.{q,k,v}_proj, rows q|k|v   (MHA)
    backbone.layers.{i}.mixer.out_proj   layers.{j}.mixer.o_proj                     (MHA)
    backbone.layers.{i}.norm2.weight     layers.{j+1}.norm.weight
    backbone.layers.{i}.mlp.fc1.weight   layers.{j+1}.mixer.{up,gate}_proj, rows up|gate (y * silu(gate))
    backbone.layers.{i}.mlp.fc2.weight   layers.{j+1}.mixer.down_proj
    backbone.norm_f.weight, lm_head.weight

The vocabulary is padded to a multiple of pad_vocab_size_multiple, as mamba-ssm pads it. Norms are RMSNorm
with eps 1e-5 (mamba-ssm's fixed value); LayerNorm models (rms_norm=false) are not supported.
"""
from __future__ import annotations

from collections.abc import Mapping

from hybrid.convert.links import Link, concat_rows, lm_head_link, rename, renames
from hybrid.convert.specs import check_supported, exact_expand, require
from hybrid.model import HybridLM

TOP_KEYS = {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
            "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"}
# settings of mamba_ssm.modules.mamba_simple.Mamba; dt_init, dt_scale and use_fast_path change init or speed only
SSM_KEYS = {"layer", "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
            "dt_init_floor", "conv_bias", "bias", "use_fast_path"}
# settings of mamba_ssm.modules.mamba2.Mamba2 (our S block takes the same names); use_mem_eff_path: speed only
SSM2_KEYS = {"layer", "d_state", "d_conv", "conv_init", "expand", "headdim", "d_ssm", "ngroups", "A_init_range",
             "D_has_hdim", "rmsnorm", "norm_before_gate", "dt_min", "dt_max", "dt_init_floor", "dt_limit", "bias",
             "conv_bias", "chunk_size", "use_mem_eff_path"}
SSM2_OPTIONS = ("d_state", "d_conv", "headdim", "ngroups", "A_init_range", "D_has_hdim", "rmsnorm", "norm_before_gate",
                "dt_min", "dt_max", "dt_init_floor", "dt_limit", "bias", "conv_bias", "chunk_size")
ATTN_KEYS = {"num_heads", "num_heads_kv", "head_dim", "mlp_dim", "qkv_proj_bias", "out_proj_bias", "softmax_scale",
             "causal", "d_conv", "rotary_emb_dim", "rotary_emb_base", "rotary_emb_interleaved"}
NORM_EPS = 1e-5


def is_mamba_ssm_config(cfg: Mapping) -> bool:
    return "model_type" not in cfg and "d_model" in cfg and "n_layer" in cfg


def _mlp_hidden(d_intermediate: int) -> int:
    """GatedMLP's hidden width: d_intermediate rounded up to a multiple of 128."""
    return (d_intermediate + 127) // 128 * 128


def hybrid_args(cfg: Mapping, origin: str = "mamba-ssm config") -> dict:
    """HybridLM's constructor arguments for a mamba-ssm MambaConfig (its config.json as a dict)."""
    d_model, n_layers = require(cfg, "d_model", origin), require(cfg, "n_layer", origin)
    vocab, multiple = require(cfg, "vocab_size", origin), cfg.get("pad_vocab_size_multiple", 8)
    ssm, attn = dict(cfg.get("ssm_cfg") or {}), dict(cfg.get("attn_cfg") or {})
    attn_idx = set(cfg.get("attn_layer_idx") or [])
    d_inter = cfg.get("d_intermediate", 0)
    heads = attn.get("num_heads", 1)
    head_dim = attn.get("head_dim") or d_model // heads
    rotary = attn.get("rotary_emb_dim", 0)
    layer = ssm.get("layer", "Mamba1")
    known = SSM2_KEYS if layer == "Mamba2" else SSM_KEYS
    d_inner = int(ssm.get("expand", 2) * d_model)
    checks = [(not (set(cfg) - TOP_KEYS), f"unknown config keys {sorted(set(cfg) - TOP_KEYS)}"),
              (not (set(ssm) - known), f"unknown ssm_cfg keys {sorted(set(ssm) - known)}"),
              (layer in ("Mamba1", "Mamba2"),
               f"ssm_cfg.layer={layer!r}: Mamba1 (our M) and Mamba2 (our S) blocks are implemented"),
              (ssm.get("d_ssm") in (None, d_inner),
               f"ssm_cfg.d_ssm={ssm.get('d_ssm')}: a Mamba2 whose SSM is narrower than d_inner={d_inner} (an MLP "
               f"part) is not supported"),
              (cfg.get("rms_norm", True), "rms_norm=false (LayerNorm): our blocks use RMSNorm"),
              (all(0 <= i < n_layers for i in attn_idx),
               f"attn_layer_idx {sorted(attn_idx)} outside 0..{n_layers - 1}")]
    if attn_idx:
        scale = attn.get("softmax_scale")
        checks += [
            (not (set(attn) - ATTN_KEYS), f"unknown attn_cfg keys {sorted(set(attn) - ATTN_KEYS)}"),
            ("num_heads" in attn, "attn_cfg has no num_heads"),
            (attn.get("causal", False), "attn_cfg.causal is false: our attention is causal (a language model's is)"),
            (not attn.get("mlp_dim", 0), (f"attn_cfg.mlp_dim={attn.get('mlp_dim')}: the MLP fused into MHA's "
                                          f"projections is not supported")),
            (not attn.get("d_conv", 0), f"attn_cfg.d_conv={attn.get('d_conv')}: a conv on q/k/v is not supported"),
            (d_model % heads == 0 and head_dim == d_model // heads,
             f"attn_cfg.head_dim={head_dim}: ours is d_model / num_heads ({d_model} / {heads})"),
            (scale is None or abs(scale - head_dim ** -0.5) < 1e-12,
             f"attn_cfg.softmax_scale={scale}: ours is 1/sqrt(head_dim)"),
            (rotary in (0, head_dim), (f"attn_cfg.rotary_emb_dim={rotary}: partial rotary is not supported "
                                       f"(0 or head_dim={head_dim})")),
            (not attn.get("rotary_emb_interleaved", False), ("interleaved rotary is not supported (ours is "
                                                             "GPT-NeoX's half split)")),
            (attn.get("qkv_proj_bias", True) == attn.get("out_proj_bias", True),
             "qkv_proj_bias and out_proj_bias differ: our attention has one bias setting"),
        ]
    check_supported(checks, origin)
    if vocab % multiple:
        vocab += multiple - vocab % multiple
    mamba = "S" if layer == "Mamba2" else "M"
    if mamba == "S":  # mamba-ssm's gated norm has eps 1e-5, as ours by default
        blocks = {"S": {**{k: ssm[k] for k in SSM2_OPTIONS if k in ssm},
                        "expand": exact_expand(d_inner, d_model, origin), "rmsnorm_eps": NORM_EPS}}
    else:
        blocks = {"M": dict(d_state=ssm.get("d_state", 16), d_conv=ssm.get("d_conv", 4),
                            expand=exact_expand(d_inner, d_model, origin),
                            dt_rank=ssm.get("dt_rank", "auto"), dt_min=ssm.get("dt_min", 1e-3),
                            dt_max=ssm.get("dt_max", 0.1), dt_init_floor=ssm.get("dt_init_floor", 1e-4),
                            conv_bias=ssm.get("conv_bias", True), bias=ssm.get("bias", False))}
    if attn_idx:
        blocks["A"] = dict(n_heads=heads, n_kv_heads=attn.get("num_heads_kv") or heads,
                           rope_base=float(attn.get("rotary_emb_base", 10000.0)) if rotary else None,
                           bias=attn.get("qkv_proj_bias", True))
    if d_inter:
        blocks["F"] = dict(d_hidden=_mlp_hidden(d_inter), bias=False)
    layout = "".join(("A" if i in attn_idx else mamba) + ("F" if d_inter else "") for i in range(n_layers))
    return dict(vocab_size=vocab, d_model=d_model, layout=layout, blocks=blocks,
                tie_embeddings=cfg.get("tie_embeddings", True), norm_eps=NORM_EPS,
                residual_in_fp32=cfg.get("residual_in_fp32", True))


def links(model: HybridLM, source_keys=None) -> tuple[list[Link], set[str]]:
    """The links of `model` (built from hybrid_args) to a MambaLMHeadModel state dict."""
    keys = list(model.state_dict(keep_vars=True))
    out = [rename("embedding.weight", "backbone.embedding.weight"), rename("norm.weight", "backbone.norm_f.weight")]
    out.append(lm_head_link(model.lm_head.weight is model.embedding.weight))
    per_layer = 2 if "F" in model.pattern else 1
    for i in range(len(model.pattern) // per_layer):
        j, theirs = per_layer * i, f"backbone.layers.{i}."
        out.append(rename(f"layers.{j}.norm.weight", theirs + "norm.weight"))
        ours = f"layers.{j}.mixer."
        if model.pattern[j] in "MS":
            out += renames(keys, ours, theirs + "mixer.")
        else:
            att = model.layers[j].mixer
            sizes = [att.n_heads * att.head_dim] + 2 * [att.n_kv_heads * att.head_dim]
            for p in ("weight", "bias") if att.q_proj.bias is not None else ("weight",):
                out.append(concat_rows([f"{ours}{n}_proj.{p}" for n in "qkv"], theirs + f"mixer.in_proj.{p}", sizes))
                out.append(rename(f"{ours}o_proj.{p}", theirs + f"mixer.out_proj.{p}"))
        if per_layer == 2:
            ours = f"layers.{j + 1}.mixer."
            hidden = model.layers[j + 1].mixer.gate_proj.out_features
            out.append(rename(f"layers.{j + 1}.norm.weight", theirs + "norm2.weight"))
            out.append(concat_rows([ours + "up_proj.weight", ours + "gate_proj.weight"], theirs + "mlp.fc1.weight",
                                   [hidden, hidden]))
            out.append(rename(ours + "down_proj.weight", theirs + "mlp.fc2.weight"))
    return out, set()

