"""What a source format needs to know about our blocks: each block's function-relevant settings, read off the
built modules (not the config, so defaults are resolved), and helpers shared by the architecture files."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from hybrid.blocks.attention import Attention
from hybrid.blocks.mamba import Mamba
from hybrid.blocks.mamba2 import Mamba2
from hybrid.blocks.mlp import SwiGLU
from hybrid.blocks.moe import MoE
from hybrid.convert.links import ConversionError
from hybrid.model import HybridLM


class UnsupportedConfig(ConversionError):
    """A source config (or our model, on export) that the target format cannot express."""


def block_spec(mixer: torch.nn.Module) -> dict:
    """The settings of one mixer that change its function or its parameters' shapes."""
    if isinstance(mixer, Mamba):
        return dict(d_state=mixer.d_state, d_conv=mixer.d_conv, d_inner=mixer.d_inner, dt_rank=mixer.dt_rank,
                    in_bias=mixer.in_proj.bias is not None, out_bias=mixer.out_proj.bias is not None,
                    conv_bias=mixer.conv1d.bias is not None, selective=mixer.selective,
                    dt_bc_norm=mixer.dt_bc_norm,
                    dt_bc_norm_eps=mixer.dt_layernorm.eps if mixer.dt_bc_norm else None)
    if isinstance(mixer, Mamba2):
        return dict(d_state=mixer.d_state, d_conv=mixer.d_conv, d_inner=mixer.d_inner, headdim=mixer.headdim,
                    nheads=mixer.nheads, ngroups=mixer.ngroups, chunk_size=mixer.chunk_size, dt_limit=mixer.dt_limit,
                    D_has_hdim=mixer.D_has_hdim, rmsnorm=mixer.rmsnorm,
                    norm_before_gate=mixer.rmsnorm and mixer.norm.norm_before_gate,
                    rmsnorm_eps=mixer.norm.eps if mixer.rmsnorm else None,
                    in_bias=mixer.in_proj.bias is not None, out_bias=mixer.out_proj.bias is not None,
                    conv_bias=mixer.conv1d.bias is not None)
    if isinstance(mixer, Attention):
        return dict(n_heads=mixer.n_heads, n_kv_heads=mixer.n_kv_heads, head_dim=mixer.head_dim,
                    rope_base=mixer.rope_base, rope_fraction=mixer.rope_fraction,
                    bias=mixer.q_proj.bias is not None)
    if isinstance(mixer, MoE):
        return dict(n_experts=mixer.n_experts, top_k=mixer.top_k, renormalize=mixer.renormalize,
                    d_hidden=mixer.experts[0].gate_proj.out_features,
                    bias=mixer.experts[0].gate_proj.bias is not None)
    if isinstance(mixer, SwiGLU):
        return dict(d_hidden=mixer.up_proj.out_features, bias=mixer.up_proj.bias is not None,
                    activation=mixer.activation)
    raise TypeError(f"no spec for mixer {type(mixer).__name__}")


def uniform_spec(model: HybridLM, symbol: str, target: str) -> dict | None:
    """The one spec every `symbol` block of `model` shares (None when there is none); an error naming the
    layers that differ, since `target` has a single config for all blocks of a kind."""
    specs = {i: block_spec(layer.mixer) for i, layer in enumerate(model.layers) if layer.symbol == symbol}
    if not specs:
        return None
    first_i, first = next(iter(specs.items()))
    problems = [f"block {i} ({symbol}) has {_diff(first, s)} but block {first_i} has {_diff(s, first)}"
                for i, s in specs.items() if s != first]
    if problems:
        raise UnsupportedConfig(f"{target} has one config for all {symbol} blocks; ours differ", problems)
    return first


def _diff(a: dict, b: dict) -> dict:
    return {k: b[k] for k in b if a.get(k) != b[k]}


def require(cfg: Mapping, key: str, origin: str):
    """cfg[key], or an error naming the key and the config it is missing from."""
    if cfg.get(key) is None:
        raise UnsupportedConfig(f"reading {origin}", [f"config has no {key!r}"])
    return cfg[key]


def check_supported(checks: list[tuple[bool, str]], origin: str) -> None:
    """Raise one UnsupportedConfig listing the message of every failed (ok, message) pair."""
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise UnsupportedConfig(f"unsupported {origin}", problems)


def exact_expand(d_inner: int, d_model: int, where: str) -> int:
    """The integer expand factor that gives d_inner = expand * d_model (our Mamba block's only form)."""
    if d_inner % d_model:
        raise UnsupportedConfig(where, [(f"intermediate size {d_inner} is not a whole multiple of "
                                         f"d_model {d_model}; our Mamba block has d_inner = expand * d_model")])
    return d_inner // d_model
