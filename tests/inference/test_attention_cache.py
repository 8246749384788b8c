"""The KV-cache paths of hybrid.kernels.attention against a float64 softmax(QK^T)V with an explicit mask: a chunk
of queries after a cached prefix (bottom-right causal), and one query against a partly filled preallocated cache,
grouped-query heads kept grouped."""
import pytest
import torch

from hybrid.kernels.attention import attention, attention_decode


def reference(q, k, v, mask):
    """q [b, h, Lq, d], k/v [b, kv, Lk, d], mask [Lq, Lk] bool (True: visible) -> [b, h, Lq, d] float64."""
    g = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(g, dim=1) for t in (k, v))
    scores = (q.double() @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("Lq,Lk,heads,kv", [(1, 9, 4, 2), (5, 5, 2, 2), (7, 30, 6, 3), (63, 64, 4, 1)])
def test_chunk_after_prefix_is_bottom_right_causal(Lq, Lk, heads, kv):
    g = torch.Generator().manual_seed(Lq)
    q, k, v = (torch.randn(2, n, L, 6, generator=g) for n, L in ((heads, Lq), (kv, Lk), (kv, Lk)))
    mask = torch.ones(Lq, Lk, dtype=torch.bool).tril(Lk - Lq)
    assert rel(attention(q, k, v, causal=True), reference(q, k, v, mask)) < 1e-6


@pytest.mark.parametrize("length", [1, 5, 16])
def test_decode_reads_only_the_filled_cache(length):
    g = torch.Generator().manual_seed(length)
    q = torch.randn(3, 4, 8, generator=g)
    k, v = torch.randn(2, 3, 2, 16, 8, generator=g)
    k[:, :, length:], v[:, :, length:] = 1e4, -1e4  # past the length (finite, as the zeroed cache): must not count
    out = attention_decode(q, k, v, torch.tensor(length))
    want = reference(q[:, :, None], k[:, :, :length], v[:, :, :length], torch.ones(1, length, dtype=torch.bool))
    assert rel(out, want[:, :, 0]) < 1e-6
