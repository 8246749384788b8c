"""The MoE block's sorted, grouped experts equal the per-expert loop it replaced (outputs and every gradient)."""
import pytest
import torch
import torch.nn.functional as F

from hybrid.blocks.moe import MoE


def loop_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The previous implementation: for each expert, gather its tokens, run it, add back (index_add_)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    probs = F.softmax(moe.router(x).float(), dim=-1)
    weights, chosen = probs.topk(moe.top_k, dim=-1)
    if moe.renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    y = torch.zeros_like(x)
    for e, expert in enumerate(moe.experts):
        token, slot = torch.where(chosen == e)
        if token.numel():
            y.index_add_(0, token, expert(x[token]) * weights[token, slot, None].to(x.dtype))
    return y.reshape(shape)


def test_sorted_experts_equal_the_loop():
    torch.manual_seed(0)
    moe = MoE(16, n_experts=5, top_k=2, d_hidden=24, renormalize=False)
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    moe = moe.double()
    g = torch.randn(3, 7, 16, dtype=torch.float64)
    y, aux = moe(x)
    y_ref = loop_moe(moe, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    params = [x, *moe.parameters()]
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert int(aux["expert_counts"].sum()) == 3 * 7 * 2


def test_an_expert_with_no_tokens():
    """Routing that leaves experts empty (top-1 over a router that prefers one expert) still matches."""
    torch.manual_seed(1)
    moe = MoE(8, n_experts=4, top_k=1, d_hidden=16).double()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2] = 1.0
    x = torch.rand(2, 5, 8, dtype=torch.float64) + 0.1  # positive: expert 2 wins every token
    y, aux = moe(x)
    assert aux["expert_counts"].tolist() == [0, 0, 10, 0]
    torch.testing.assert_close(y, loop_moe(moe, x), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the grouped matmul runs on CUDA in bf16")
def test_grouped_mm_equals_the_loop_on_cuda():
    """Under bf16 autocast on CUDA the experts run as F.grouped_mm: the same outputs and gradients as the loop, up to
    bf16 rounding (relative error below 2e-2)."""
    torch.manual_seed(0)
    moe = MoE(64, n_experts=4, top_k=2, d_hidden=128).cuda()
    x = torch.randn(2, 50, 64, device="cuda", requires_grad=True)
    g = torch.randn(2, 50, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, _ = moe(x)
        y_ref = loop_moe(moe, x)
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()
    assert rel(y, y_ref) < 2e-2
    params = [x, *moe.parameters()]
    for a, b in zip(torch.autograd.grad(y, params, g, retain_graph=True), torch.autograd.grad(y_ref, params, g)):
        assert rel(a, b) < 2e-2
