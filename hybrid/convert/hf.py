"""Hugging Face transformers models <-> HybridLM: `from_transformers` (a model in memory or a saved directory)
and `to_transformers` (our model as a transformers model, optionally saved with save_pretrained)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from hybrid.convert import bamba, granite, jamba, mamba, mamba2, nemotron_h
from hybrid.convert.build import build_loaded, merge_blocks
from hybrid.convert.links import ConversionError, DictSource, export_from
from hybrid.convert.sources import open_weights
from hybrid.convert.specs import UnsupportedConfig
from hybrid.model import HybridLM

ARCHS = {m.MODEL_TYPE: m for m in (mamba, mamba2, jamba, nemotron_h, bamba, granite)}
# Mamba-2 hybrids whose layers are not a sequence of our residual blocks: why each has no form here
NOT_EXPRESSIBLE = {
    "zamba2": "Zamba2 interleaves one shared attention block (applied to the hidden state concatenated with the "
              "input embeddings, with a LoRA adapter per use) between its Mamba-2 layers; our blocks are each "
              "their own and see only the residual stream",
    "zamba": "Zamba (Mamba-1) shares one attention block over the hidden state concatenated with the input "
             "embeddings; our blocks are each their own and see only the residual stream",
    "falcon_h1": "Falcon-H1 runs attention and Mamba-2 in parallel on the same normed input inside one layer (their "
                 "outputs summed, with per-channel muP multipliers on the SSM's in_proj); our blocks are sequential",
}


def _arch(model_type, architectures, origin: str):
    """The architecture module for a config's model_type, or an error naming what is supported."""
    supported = ", ".join(f"{m.ARCHITECTURE} (model_type {t!r})" for t, m in ARCHS.items())
    if model_type in NOT_EXPRESSIBLE:
        raise UnsupportedConfig(f"converting {origin}", [f"model_type={model_type!r} {architectures or ''}: "
                                                         f"{NOT_EXPRESSIBLE[model_type]}; supported: {supported}"])
    if model_type not in ARCHS:
        raise UnsupportedConfig(f"converting {origin}", [(f"unsupported architecture model_type={model_type!r} "
                                                          f"{architectures or ''}; supported: {supported}")])
    arch = ARCHS[model_type]
    other = [a for a in architectures or [] if a != arch.ARCHITECTURE]
    if other:
        raise UnsupportedConfig(f"converting {origin}", [(f"architecture {other} has no LM head we can map; "
                                                          f"supported: {supported}")])
    return arch


def from_transformers(src, dtype=torch.float32, blocks: Mapping | None = None) -> HybridLM:
    """Our HybridLM with the weights of a transformers MambaForCausalLM, Mamba2ForCausalLM, NemotronHForCausalLM,
    BambaForCausalLM, GraniteMoeHybridForCausalLM (dense) or JambaForCausalLM.

    Args:
        src: the model (in memory) or a directory saved by save_pretrained (config.json + safetensors/bin).
        dtype: the parameters' dtype (None keeps each tensor's own).
        blocks: per-symbol block options merged over those derived from the config, e.g.
            {"M": {"scan_backend": "triton"}} (options that change shapes fail the shape check).
    Raises UnsupportedConfig for a config we cannot express, ConversionError listing every missing, unmapped
    or mis-shaped tensor.
    """
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a local directory (hub ids are not downloaded here: fetch one "
                                    f"with `huggingface-cli download ID --local-dir DIR` and pass DIR)")
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a transformers model directory "
                                    f"(a mamba-ssm or hybrid checkpoint loads with hybrid.convert.load_checkpoint)")
        cfg = json.loads((path / "config.json").read_text())
        source, origin = open_weights(path), str(path)
    else:
        if not hasattr(src, "config") or not hasattr(src, "state_dict"):
            raise TypeError(f"from_transformers takes a transformers model or a directory; got {type(src).__name__}")
        cfg, origin = src.config.to_dict(), type(src).__name__
        cfg["architectures"] = [type(src).__name__]
        source = DictSource(src.state_dict(), origin)
    arch = _arch(cfg.get("model_type"), cfg.get("architectures"), origin)
    args = merge_blocks(arch.hybrid_args(cfg, origin=f"{arch.ARCHITECTURE} config of {origin}"), blocks)
    links = arch.links
    if getattr(arch, "LINKS_READ_CONFIG", False):  # the config's multipliers are folded into the weights
        def links(model, keys):
            return arch.links(model, keys, cfg=cfg)
    return build_loaded(args, links, source, dtype, what=f"converting {origin} ({arch.ARCHITECTURE})")


def _export_arch(model: HybridLM):
    """The architecture module a model exports to, by its symbols (its hf_config then says what does not fit)."""
    p = model.pattern
    if set(p) == {"M"}:
        return mamba
    if set(p) == {"S"}:
        return mamba2
    if "S" not in p:
        return jamba
    pairs = len(p) % 2 == 0 and all(c in ("SA" if j % 2 == 0 else "F") for j, c in enumerate(p))
    swiglu = all(layer.mixer.activation == "swiglu" for layer in model.layers if layer.symbol == "F")
    if not (pairs and swiglu):
        return nemotron_h  # Mamba-2, attention and relu^2 MLPs in any order
    # (S | A) + SwiGLU F per layer: Bamba rotates half of each attention head, Granite all of it or none
    whole = any(layer.mixer.rope_base is None or layer.mixer.rope_fraction == 1
                for layer in model.layers if layer.symbol == "A")
    return granite if whole else bamba


def _rebuild_meta_buffers(hf_model) -> None:
    """Rebuild, on the CPU from the config, each submodule that holds a buffer no state dict carries (a rotary
    embedding's inv_freq): building on the meta device left it without values."""
    owners = {name.rpartition(".")[0] for name, t in hf_model.named_buffers() if t.is_meta}
    for owner in sorted(owners):
        module = hf_model.get_submodule(owner)
        if any(p.is_meta for p in module.parameters()):
            continue  # not a pure buffer holder: reported by the caller
        parent, _, child = owner.rpartition(".")
        setattr(hf_model.get_submodule(parent), child, type(module)(config=hf_model.config))


def to_transformers(model: HybridLM, out_dir: str | Path | None = None):
    """`model` as a transformers model: MambaForCausalLM for an all-Mamba stack, Mamba2ForCausalLM for an all-Mamba-2
    (`S`) stack, BambaForCausalLM for Mamba-2 / attention layers each followed by a SwiGLU MLP (attention rotating
    half of each head; GraniteMoeHybridForCausalLM where it rotates whole heads or none), NemotronHForCausalLM
    for other stacks of Mamba-2, attention and relu^2 MLPs, JambaForCausalLM for a
    Jamba-style one (alternating mixer and feed-forward blocks, attention and MoE periodic), in eval mode.
    With `out_dir`, also save_pretrained there, so that from_pretrained(out_dir) loads it.
    Raises UnsupportedConfig saying why the model fits neither."""
    import transformers
    arch = _export_arch(model)
    config = arch.hf_config(model)
    with torch.device("meta"):  # no random init of weights that are overwritten next (seconds at 100M+)
        hf_model = getattr(transformers, arch.ARCHITECTURE)(config)
    want = {k: tuple(v.shape) for k, v in hf_model.state_dict().items()}
    links, _ = arch.links(model, set(want))
    state = export_from(model, links, want, what=f"exporting to {arch.ARCHITECTURE}")
    state = {k: t.clone() for k, t in state.items()}  # the transformers model shares no memory with ours
    hf_model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:  # assign gave the head its own Parameter: tie it again
        hf_model.get_output_embeddings().weight = hf_model.get_input_embeddings().weight
    _rebuild_meta_buffers(hf_model)
    left = [n for n, t in list(hf_model.named_parameters()) + list(hf_model.named_buffers()) if t.is_meta]
    if left:
        raise ConversionError(f"exporting to {arch.ARCHITECTURE}", [f"no value for {n!r}" for n in left])
    hf_model.eval()
    if out_dir is not None:
        hf_model.save_pretrained(str(out_dir))
    return hf_model
