"""HybridLM.step captured in a CUDA graph: one replay per token instead of hundreds of kernel launches.

A decode step is a few hundred small kernels whose launch cost, not their arithmetic, bounds small-batch decoding
(the Mamba paper's generation benchmark, mamba-ssm's `cg=True`). Every step of the model is graph-safe: static
shapes, the KV position a device tensor (blocks/attention.py), no host sync. The graph is captured for one cache
(its tensors' addresses are baked in) and replayed with a new token copied into a static input buffer.

The warm-up before capture runs real steps: the states it advances are snapshotted and put back (the Mamba states,
their `empty` flags and the KV lengths; the KV entries it writes lie past the restored length, masked, and are
overwritten later).
"""
import torch

from hybrid.inference import InferenceCache


def _state_tensors(cache: InferenceCache) -> list[torch.Tensor]:
    """The cache tensors a step changes that must be restored after warm-up (KV contents excluded)."""
    out = []
    for c in cache.layers:
        if c is None:
            continue
        out += [t for name, t in vars(c).items() if isinstance(t, torch.Tensor) and name not in ("k", "v")]
    return out


class GraphStep:
    """Callable like model.step(tokens [batch], cache) -> logits [batch, vocab], for the one cache it was built on.

    The logits returned are a static buffer, overwritten by the next call: consume them (sample) before calling
    again. warmup: eager steps before capture (cuBLAS handles, Triton compilation)."""

    def __init__(self, model, cache: InferenceCache, warmup: int = 2):
        if next(model.parameters()).device.type != "cuda":
            raise RuntimeError("GraphStep captures a CUDA graph: the model must be on a CUDA device")
        self.model, self.cache = model, cache
        device = next(model.parameters()).device
        self.tokens = torch.zeros(cache.batch_size, dtype=torch.long, device=device)
        saved = [t.clone() for t in _state_tensors(cache)]
        seqlen, empty = cache.seqlen, [(c, c.empty) for c in cache.layers if hasattr(c, "empty")]
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):
                model.step(self.tokens, cache)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.logits = model.step(self.tokens, cache)
        for t, s in zip(_state_tensors(cache), saved):
            t.copy_(s)
        cache.seqlen = seqlen
        for c, was_empty in empty:
            c.empty = was_empty

    def __call__(self, tokens: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        if cache is not self.cache:
            raise ValueError("this GraphStep was captured for another cache; build one per cache")
        self.tokens.copy_(tokens)
        self.graph.replay()
        cache.seqlen += 1
        return self.logits
