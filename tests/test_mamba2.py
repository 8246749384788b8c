"""The `S` block (Mamba-2): the inference protocol (step and chunked prefill equal the parallel forward), the
gated norm, the SSD it runs, and the stacks it builds."""
import pytest
import torch

from hybrid.blocks.mamba2 import GatedRMSNorm, Mamba2
from hybrid.model import HybridLM

CONFIGS = {
    "default": dict(d_state=6, headdim=4, chunk_size=4),
    "groups-limits": dict(d_state=5, headdim=8, ngroups=2, chunk_size=8, dt_limit=(0.01, 0.5), d_conv=3),
    "nonorm-Dhdim-bias": dict(d_state=3, headdim=2, rmsnorm=False, D_has_hdim=True, bias=True, chunk_size=2),
    "norm-first": dict(d_state=4, headdim=4, ngroups=4, norm_before_gate=True, conv_bias=False, chunk_size=16),
}


def make(name, d_model=8, seed=0):
    """A block with every parameter perturbed (D not 1, norm weight not 1, distinct dt biases)."""
    torch.manual_seed(seed)
    block = Mamba2(d_model, **CONFIGS[name]).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("name", CONFIGS)
def test_step_equals_parallel(name):
    block = make(name)
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    with torch.no_grad():
        full = block(x)
        cache = block.allocate_inference_cache(2, 11)
        steps = torch.stack([block.step(x[:, t], cache) for t in range(11)], dim=1)
    assert cache.ssm_state.shape == (2, block.nheads, block.headdim, block.d_state)
    assert cache.ssm_state.dtype == torch.float32
    assert torch.allclose(steps, full, rtol=1e-5, atol=1e-6), (steps - full).abs().max()


@pytest.mark.parametrize("name", CONFIGS)
def test_chunked_prefill_then_steps_equals_parallel(name):
    """Prefill in pieces of 1, 5 and 3 tokens (shorter than the conv, across SSD chunks), then step."""
    block = make(name, seed=1)
    x = torch.randn(3, 12, 8, dtype=torch.float64)
    with torch.no_grad():
        full = block(x)
        cache = block.allocate_inference_cache(3, 12, dtype=torch.float64)
        pieces = [block(x[:, a:b], cache=cache) for a, b in ((0, 1), (1, 6), (6, 9))]
        pieces += [block.step(x[:, t], cache)[:, None] for t in range(9, 12)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-6)


def test_gated_norm_matches_its_definition():
    torch.manual_seed(0)
    norm = GatedRMSNorm(8, group_size=4, eps=1e-5)
    norm.weight.data.uniform_(0.5, 1.5)
    y, z = torch.randn(3, 8), torch.randn(3, 8)
    g = (y * torch.nn.functional.silu(z)).view(3, 2, 4)
    want = (g / (g.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()).view(3, 8) * norm.weight
    assert torch.allclose(norm(y, z), want, atol=1e-6)
    norm.norm_before_gate = True
    h = y.view(3, 2, 4)
    want = (h / (h.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()).view(3, 8) * norm.weight * torch.nn.functional.silu(z)
    assert torch.allclose(norm(y, z), want, atol=1e-6)


def test_forward_is_ssd_over_the_projected_inputs():
    """Against a hand-written forward: in_proj split, causal conv + silu, the SSD recurrence, norm, out_proj."""
    block = make("groups-limits")
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    z, xBC, dt = block.in_proj(x).split([block.d_inner, block.conv_dim, block.nheads], -1)
    xBC = torch.nn.functional.silu(block.conv1d(xBC.transpose(1, 2))[..., :9].transpose(1, 2))
    xs, B, C = xBC.split([block.d_inner, 10, 10], -1)
    dt = torch.nn.functional.softplus(dt + block.dt_bias).clamp(0.01, 0.5)
    A = -torch.exp(block.A_log)
    h = torch.zeros(2, block.nheads, block.headdim, 5, dtype=torch.float64)
    ys = []
    for t in range(9):
        xt = xs[:, t].view(2, block.nheads, block.headdim)
        Bt = B[:, t].view(2, 2, 5).repeat_interleave(block.nheads // 2, 1)
        Ct = C[:, t].view(2, 2, 5).repeat_interleave(block.nheads // 2, 1)
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * xt)[..., None] * Bt[:, :, None]
        ys.append(((h * Ct[:, :, None]).sum(-1) + xt * block.D[:, None]).flatten(1))
    want = block.out_proj(block.norm(torch.stack(ys, 1), z))
    with torch.no_grad():
        assert torch.allclose(block(x), want, rtol=1e-9, atol=1e-10)


def test_parameter_names_and_shapes_are_mamba_ssms():
    block = Mamba2(16, d_state=8, headdim=4, ngroups=2)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {"in_proj.weight": (2 * 32 + 2 * 2 * 8 + 8, 16), "conv1d.weight": (64, 1, 4),
                      "conv1d.bias": (64,), "dt_bias": (8,), "A_log": (8,), "D": (8,), "norm.weight": (32,),
                      "out_proj.weight": (16, 32)}
    A = torch.exp(block.A_log)
    assert ((A >= 1) & (A <= 16)).all() and torch.equal(block.D, torch.ones(8))
    dt = torch.nn.functional.softplus(block.dt_bias)
    assert ((dt > 0.9e-3) & (dt < 0.11)).all()


def test_stacks_with_mamba2_train():
    torch.manual_seed(0)
    model = HybridLM(vocab_size=13, d_model=16, layout={"megatron": "M-M*"},
                     blocks={"S": {"d_state": 4, "headdim": 8, "chunk_size": 4}, "A": {"n_heads": 2}})
    assert model.pattern == "SFSA" and model.layout_source == "megatron"
    tokens = torch.randint(0, 13, (2, 10))
    loss = torch.nn.functional.cross_entropy(model(tokens).logits.flatten(0, 1), tokens.flatten())
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    assert model.flops_per_token(64) > 0


def test_conv_backends_agree_and_bad_names_are_refused():
    """hybrid.kernels.causal_conv1d runs the block's conv: our Triton kernel (fused SiLU; interpreted on the CPU)
    gives what the reference gives, output and every gradient; an unknown backend is refused naming the choices."""
    torch.manual_seed(3)
    x = torch.randn(2, 7, 8)
    outs = []
    for backend in ("reference", "triton"):
        torch.manual_seed(0)
        block = Mamba2(8, conv_backend=backend, **CONFIGS["groups-limits"])
        xi = x.clone().requires_grad_(True)
        y = block(xi)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        outs.append((y, xi.grad, {n: p.grad for n, p in block.named_parameters()}))
    (y0, dx0, g0), (y1, dx1, g1) = outs
    assert torch.allclose(y1, y0, rtol=1e-5, atol=1e-6) and torch.allclose(dx1, dx0, rtol=1e-5, atol=1e-6)
    for name in g0:
        assert torch.allclose(g1[name], g0[name], rtol=1e-4, atol=1e-6), name
    with pytest.raises(ValueError, match="conv_backend='fast'; allowed: auto, reference, triton"):
        Mamba2(8, conv_backend="fast", **CONFIGS["default"])
