"""Building a HybridLM from constructor arguments and a source's tensors: on the meta device (no init, no
memory), then every parameter assigned from the source through an architecture's links."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from hybrid.convert.links import ConversionError, TensorSource, load_into
from hybrid.model import HybridLM

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}


def as_dtype(dtype) -> torch.dtype | None:
    """A torch dtype from a dtype, a name ("float32", "bf16" ...; Hydra passes strings) or None (keep)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype in ("none", "None", "keep"):
        return None
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}, or None to keep the checkpoint's")
    return DTYPES[dtype]


def merge_blocks(args: dict, blocks: Mapping | None) -> dict:
    """`args` with per-symbol block options merged over its own (e.g. {"M": {"scan_backend": "triton"}})."""
    if not blocks:
        return args
    merged = {s: dict(v) for s, v in (args.get("blocks") or {}).items()}
    for symbol, options in blocks.items():
        merged[symbol] = {**merged.get(symbol, {}), **dict(options)}
    return {**args, "blocks": merged}


def build_loaded(args: dict, links_fn: Callable, source: TensorSource, dtype=torch.float32,
                 what: str = "") -> HybridLM:
    """HybridLM(**args) holding `source`'s tensors, mapped by `links_fn(model, source_keys) -> (links, extras)`.

    Raises ConversionError listing every missing, unmapped or mis-shaped tensor before anything is loaded.
    """
    with torch.device("meta"):
        model = HybridLM(**args)
    links, extras = links_fn(model, set(source.keys()))
    load_into(model, links, source, extras, dtype=as_dtype(dtype), what=what)
    if model.init_args["tie_embeddings"]:  # assign gave the head its own tensor: tie it again
        model.lm_head.weight = model.embedding.weight
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ConversionError(what or f"loading {source.origin}", [f"no value loaded for {n!r}" for n in left])
    return model
