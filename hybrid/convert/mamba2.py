"""Hugging Face transformers' Mamba-2 (`Mamba2ForCausalLM`, model_type "mamba2") <-> HybridLM "S" * n_layers.

Their layer i is one pre-norm residual block (RMSNorm -> Mamba2Mixer -> add), our block i; the mixer's parameters
carry mamba-ssm's names, which are ours (in_proj, conv1d, dt_bias, A_log, D, norm.weight, out_proj).

    backbone.embeddings.weight             embedding.weight
    backbone.layers.{i}.norm.weight        layers.{i}.norm.weight
    backbone.layers.{i}.mixer.*            layers.{i}.mixer.*
    backbone.norm_f.weight                 norm.weight
    lm_head.weight                         lm_head.weight          (untied by default)

Their mixer: in_proj -> (gate z, xBC, dt); depthwise causal conv + SiLU over xBC; the SSD with dt_bias, softplus and
time_step_limit; a gated RMSNorm over groups of intermediate_size / n_groups channels, norm(y * silu(z)); out_proj.
"""
from __future__ import annotations

from collections.abc import Mapping

from hybrid.convert.links import Link, lm_head_link, rename, renames
from hybrid.convert.specs import check_supported, exact_expand, require, uniform_spec
from hybrid.model import HybridLM

MODEL_TYPE = "mamba2"
ARCHITECTURE = "Mamba2ForCausalLM"


def time_step_limit(value) -> tuple[float, float]:
    """A config's (min, max) dt limit as floats; transformers writes infinity to config.json as
    {"__float__": "Infinity"}, and None means no limit."""
    def number(v):
        return float(v["__float__"]) if isinstance(v, Mapping) else float(v)
    return (0.0, float("inf")) if value is None else (number(value[0]), number(value[1]))


def hybrid_args(cfg: Mapping, origin: str = "Mamba2Config") -> dict:
    """HybridLM's constructor arguments for a Mamba2Config (as a dict)."""
    d_model, n_layers = require(cfg, "hidden_size", origin), require(cfg, "num_hidden_layers", origin)
    heads, head_dim = require(cfg, "num_heads", origin), require(cfg, "head_dim", origin)
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    check_supported([(cfg.get("hidden_act", "silu") == "silu",
                      f"hidden_act={cfg.get('hidden_act')!r}: our Mamba-2 block uses silu")], origin)
    block = dict(d_state=cfg.get("state_size", 128), d_conv=cfg.get("conv_kernel", 4),
                 expand=exact_expand(heads * head_dim, d_model, origin), headdim=head_dim,
                 ngroups=cfg.get("n_groups", 1), chunk_size=cfg.get("chunk_size", 256),
                 dt_min=cfg.get("time_step_min", 1e-3), dt_max=cfg.get("time_step_max", 0.1),
                 dt_init_floor=cfg.get("time_step_floor", 1e-4),
                 dt_limit=time_step_limit(cfg.get("time_step_limit")),
                 bias=cfg.get("use_bias", False), conv_bias=cfg.get("use_conv_bias", True), rmsnorm_eps=eps)
    return dict(vocab_size=require(cfg, "vocab_size", origin), d_model=d_model, layout="S" * n_layers,
                blocks={"S": block}, tie_embeddings=cfg.get("tie_word_embeddings", False), norm_eps=eps,
                residual_in_fp32=cfg.get("residual_in_fp32", True))


def links(model: HybridLM, source_keys=None) -> tuple[list[Link], set[str]]:
    """The links of `model` (built from hybrid_args) to a Mamba2ForCausalLM state dict; no extras."""
    keys = list(model.state_dict(keep_vars=True))
    out = [rename("embedding.weight", "backbone.embeddings.weight"), rename("norm.weight", "backbone.norm_f.weight")]
    out.append(lm_head_link(model.lm_head.weight is model.embedding.weight))
    for i in range(len(model.pattern)):
        out.append(rename(f"layers.{i}.norm.weight", f"backbone.layers.{i}.norm.weight"))
        out += renames(keys, f"layers.{i}.mixer.", f"backbone.layers.{i}.mixer.")
    return out, set()


def mamba2_checks(spec: dict | None, eps: float) -> list[tuple[bool, str]]:
    """What transformers' Mamba-2 mixer cannot express, as (ok, message) pairs; `eps` is the config's one norm eps."""
    return [
        (spec is None or not spec["rmsnorm"] or spec["rmsnorm_eps"] == eps,
         f"one layer_norm_epsilon for every norm: rmsnorm_eps={spec and spec['rmsnorm_eps']} != norm_eps={eps}"),
        (spec is None or spec["rmsnorm"], "rmsnorm=False: transformers' Mamba-2 always has the gated RMSNorm"),
        (spec is None or not spec["norm_before_gate"], "norm_before_gate=True: transformers gates, then norms"),
        (spec is None or not spec["D_has_hdim"], "D_has_hdim=True: transformers has one D per head"),
        (spec is None or spec["in_bias"] == spec["out_bias"], "in_proj and out_proj bias must agree (use_bias)"),
    ]


def mixer_mlp_pairs_check(pattern: str, has_mamba2: bool, family: str) -> tuple[bool, str]:
    """(ok, message) for a `family` (Bamba, Granite) layer stack: every layer a mixer (S or A) then an MLP (F),
    with at least one Mamba-2 block."""
    odd = [f"position {j} is {c!r}" for j, c in enumerate(pattern) if c not in ("SA" if j % 2 == 0 else "F")]
    return (len(pattern) % 2 == 0 and not odd and has_mamba2,
            f"pattern {pattern!r}: a {family} layer is a mixer (S, or A) then an MLP (F)"
            + (f"; {', '.join(odd)}" if odd else "") + ("" if has_mamba2 else "; no Mamba-2 block"))


def hf_config(model: HybridLM):
    """A transformers Mamba2Config for `model`, or an error saying why the model does not fit one."""
    from transformers import Mamba2Config
    target = "transformers' Mamba2Config"
    spec = uniform_spec(model, "S", target)
    check_supported([(set(model.pattern) == {"S"}, f"pattern {model.pattern!r}: a Mamba-2 model has only 'S'")]
                    + mamba2_checks(spec, model.norm.eps), target)
    return Mamba2Config(
        vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=len(model.pattern),
        num_heads=spec["nheads"], head_dim=spec["headdim"], state_size=spec["d_state"], n_groups=spec["ngroups"],
        expand=exact_expand(spec["d_inner"], model.d_model, target), conv_kernel=spec["d_conv"],
        chunk_size=spec["chunk_size"], time_step_limit=spec["dt_limit"], use_bias=spec["in_bias"],
        use_conv_bias=spec["conv_bias"], hidden_act="silu", layer_norm_epsilon=model.norm.eps,
        residual_in_fp32=model.residual_in_fp32, tie_word_embeddings=model.lm_head.weight is model.embedding.weight)
