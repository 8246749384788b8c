"""Our checkpoint format, and `load_checkpoint`, which reads it or any source format we convert from.

A hybrid checkpoint is a directory:
    model.safetensors      our state dict (a tied LM head stored once, as embedding.weight)
    hybrid_config.json     {"format": "hybrid.HybridLM", "version": 1, "pattern": ..., "model": HybridLM's
                           constructor arguments (layout as the canonical pattern), "source": provenance}
`load_checkpoint(path)` also takes a transformers directory (config.json with a model_type) or a mamba-ssm
one (config.json with d_model and n_layer) and converts on the fly; `model=from_checkpoint model.path=DIR`
builds a model this way from Hydra.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from hybrid.convert import mamba_ssm
from hybrid.convert.build import build_loaded, merge_blocks
from hybrid.convert.links import ConversionError, rename
from hybrid.convert.sources import FileSource, open_weights
from hybrid.model import HybridLM

FORMAT, VERSION = "hybrid.HybridLM", 1
CONFIG_NAME, WEIGHTS_NAME = "hybrid_config.json", "model.safetensors"


def save_checkpoint(model: HybridLM, out_dir: str | Path, source: Mapping | None = None) -> Path:
    """Write `model` to `out_dir` (created) as model.safetensors + hybrid_config.json; returns out_dir.
    `source`: provenance recorded in the config (e.g. {"from": "MambaForCausalLM", "path": ...})."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen, state = set(), {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:  # the tied head: stored once, under the embedding's name
            continue
        seen.add(id(t))
        state[name] = t.detach().contiguous()
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": FORMAT})
    args = {**model.init_args, "layout": model.pattern}
    config = {"format": FORMAT, "version": VERSION, "pattern": model.pattern, "layout_source": model.layout_source,
              "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "model": args,
              "source": dict(source or {})}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


def _own_links(model: HybridLM, source_keys=None):
    """Our own names, one to one; the tied head is implied by the embedding."""
    tied = model.lm_head.weight is model.embedding.weight
    return [rename(k, k) for k in model.state_dict(keep_vars=True) if not (tied and k == "lm_head.weight")], set()


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"reading {path}", [f"not a readable JSON config: {e}"]) from None


def load_checkpoint(path: str | Path, vocab_size: int | None = None, dtype="float32",
                    blocks: Mapping | None = None) -> HybridLM:
    """A HybridLM from a checkpoint directory: ours (hybrid_config.json), a transformers one (config.json with
    model_type mamba or jamba) or a mamba-ssm one (config.json with d_model, n_layer).

    Args:
        vocab_size: when given (Hydra's train config sets it from the task), it must equal the checkpoint's.
        dtype: the parameters' dtype ("float32" by default; None keeps the stored dtypes).
        blocks: per-symbol block options merged over the checkpoint's, e.g. {"M": {"scan_backend": "triton"}}.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a local directory (hub ids are not downloaded here: "
                                f"fetch one with `huggingface-cli download ID --local-dir DIR` and pass DIR)")
    if (path / CONFIG_NAME).exists():
        config = _read_config(path / CONFIG_NAME)
        if config.get("format") != FORMAT or config.get("version") != VERSION:
            raise ConversionError(f"reading {path / CONFIG_NAME}", [
                (f"format {config.get('format')!r} version {config.get('version')!r}; expected {FORMAT!r} "
                 f"version {VERSION}")])
        args = merge_blocks(dict(config["model"]), blocks)
        weights = path / WEIGHTS_NAME
        if not weights.exists():
            raise FileNotFoundError(f"checkpoint {path} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
        model = build_loaded(args, _own_links, FileSource([weights], str(path)), dtype, what=f"loading {path}")
    elif (path / "config.json").exists():
        config = _read_config(path / "config.json")
        if mamba_ssm.is_mamba_ssm_config(config):
            model = from_mamba_ssm(path, dtype=dtype, blocks=blocks)
        else:
            from hybrid.convert.hf import from_transformers
            model = from_transformers(path, dtype=dtype, blocks=blocks)
    else:
        present = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(f"{path} holds no checkpoint: expected {CONFIG_NAME} (ours) or config.json "
                                f"(transformers, mamba-ssm); found {present}")
    if vocab_size is not None and int(vocab_size) != model.vocab_size:
        raise ValueError(f"vocab_size={vocab_size} was asked for but checkpoint {path} has vocab_size="
                         f"{model.vocab_size}; a tokenizer/task of that vocabulary is needed")
    return model


def from_mamba_ssm(path: str | Path, dtype=torch.float32, blocks: Mapping | None = None) -> HybridLM:
    """Our HybridLM from a mamba-ssm MambaLMHeadModel directory (config.json + pytorch_model.bin/safetensors)."""
    path = Path(path)
    cfg = _read_config(path / "config.json")
    args = merge_blocks(mamba_ssm.hybrid_args(cfg, origin=f"mamba-ssm config {path / 'config.json'}"), blocks)
    return build_loaded(args, mamba_ssm.links, open_weights(path), dtype, what=f"converting mamba-ssm {path}")
