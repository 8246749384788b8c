"""Long-context evaluation in bounded memory: a long sequence runs chunk by chunk through the inference cache.

`task.eval_chunk=N` (a TaskConfig field) makes every evaluation batch longer than N run as consecutive prefills of
N tokens (HybridLM.forward(tokens, cache)): Mamba layers carry a constant-size state from chunk to chunk, so the
activations, not the sequence, bound the memory (a 2-layer Mamba evaluates induction heads at L = 2^20 on a CPU).
Attention layers must keep every key and value of the sequence: their KV cache grows with L, is logged, and is an
error naming its size when it would not fit in the memory that is free.
"""
import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def kv_cache_bytes(model, batch_size: int, seqlen: int, dtype=None) -> int:
    """Bytes of the attention layers' KV caches for `batch_size` sequences of `seqlen` tokens (0 without attention)."""
    cache = model.allocate_inference_cache(batch_size, seqlen, dtype=dtype, device="meta")  # shapes only
    return sum(c.k.numel() * c.k.element_size() * 2 for c in cache.layers if hasattr(c, "k"))


def free_memory_bytes(device: torch.device) -> int:
    """Memory free on `device`: the CUDA allocator's view on a GPU, the system's available pages on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 62  # unknown: do not refuse


def check_kv_fits(model, batch_size: int, seqlen: int, device: torch.device, dtype=None) -> int:
    """The KV bytes a chunked evaluation of this length needs; logged when non-zero, a MemoryError when they exceed
    half the free memory (the rest is for activations)."""
    need = kv_cache_bytes(model, batch_size, seqlen, dtype)
    if need:
        free = free_memory_bytes(device)
        log.info("chunked evaluation at L=%d: attention layers keep their KV cache, %.3f GiB", seqlen, need / 2**30)
        if need > free // 2:
            raise MemoryError(f"chunked evaluation at L={seqlen}, batch {batch_size}: the attention layers' KV cache "
                              f"needs {need / 2**30:.2f} GiB and only {free / 2**30:.2f} GiB are free on {device}; "
                              f"lower the evaluation length or batch size (only Mamba layers have constant state)")
    return need


@torch.no_grad()
def chunked_stats(model, inputs: torch.Tensor, targets: torch.Tensor, chunk: int | None,
                  stats: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """`stats(logits, targets)` summed over the chunks of one batch, equal to `stats` of the whole sequence.

    inputs, targets [batch, L]; chunk: tokens per forward (None or >= L: one whole-sequence forward); stats returns
    additive tensors (sums and counts, e.g. hybrid.lit.answer_stats)."""
    batch, L = inputs.shape
    if chunk is None or L <= chunk:
        return stats(model(inputs).logits, targets)
    device = inputs.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    check_kv_fits(model, batch, L, device, dtype)
    cache = model.allocate_inference_cache(batch, L, dtype=dtype)  # under autocast, K/V in its dtype
    total = None
    for start in range(0, L, chunk):
        part = stats(model(inputs[:, start:start + chunk], cache).logits, targets[:, start:start + chunk])
        total = part if total is None else tuple(a + b for a, b in zip(total, part))
    return total


def eval_chunk_of(trainer) -> int | None:
    """task.eval_chunk of the trainer's data module (None when it has none)."""
    task = getattr(getattr(trainer, "datamodule", None), "task", None)
    return getattr(task, "eval_chunk", None)
