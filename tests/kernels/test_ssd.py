"""`hybrid.kernels.ssd`: the chunked reference against the float64 recurrence (outputs, final states, every
gradient) on awkward shapes; the recurrence against Mamba-1's scan; dispatch and the errors for bad input."""
import math
import re

import pytest
import torch

from hybrid.kernels.selective_scan.reference import selective_scan_sequential
from hybrid.kernels.ssd import ssd
from hybrid.kernels.ssd.reference import ssd_sequential

FP32_TOL = 2e-5  # relative error of fp32 results against the float64 recurrence


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make_inputs(batch=2, L=63, heads=3, head_dim=5, groups=1, N=4, seed=0, D_per_dim=False, dtype=torch.float32):
    """Fresh random inputs of every argument (nothing zero): dt before softplus around -1, A in [-1.5, -0.1]."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(dtype)
    return dict(x=rand(batch, L, heads, head_dim), dt=rand(batch, L, heads, scale=0.5, shift=-1.0),
                A=-(torch.rand(heads, generator=g) * 1.4 + 0.1).to(dtype),
                B=rand(batch, L, groups, N), C=rand(batch, L, groups, N),
                D=rand(heads, head_dim) if D_per_dim else rand(heads), z=rand(batch, L, heads, head_dim),
                dt_bias=rand(heads, scale=0.3), initial_states=rand(batch, heads, head_dim, N))


def run_with_grads(fn, inputs, weights):
    """fn's output and final state, and the gradient of sum(y * wy) + sum(state * ws) for every input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y, state = fn(**leaves)
    ((y * weights[0]).sum() + (state * weights[1]).sum()).backward()
    return y, state, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("L", [1, 20, 63, 300])  # 20: shorter than a chunk, one chunk of 32
@pytest.mark.parametrize("heads,groups", [(1, 1), (3, 1), (3, 3)])
def test_chunked_equals_the_recurrence_with_every_gradient(L, heads, groups):
    inputs = make_inputs(L=L, heads=heads, groups=groups, seed=L + 10 * heads + groups)
    g = torch.Generator().manual_seed(1)
    weights = (torch.randn(2, L, heads, 5, generator=g), torch.randn(2, heads, 5, 4, generator=g))
    opts = dict(dt_softplus=True, return_final_states=True)
    y, state, grads = run_with_grads(lambda **t: ssd(**t, chunk_size=64, backend="reference", **opts),
                                     inputs, weights)
    ref = {k: v.double() for k, v in inputs.items()}
    y64, state64, grads64 = run_with_grads(lambda **t: ssd_sequential(**t, **opts), ref,
                                           [w.double() for w in weights])
    assert y.dtype == torch.float32 and state.dtype == torch.float32
    assert rel_err(y, y64) < FP32_TOL and rel_err(state, state64) < FP32_TOL
    assert set(grads) == set(grads64) == set(inputs)
    for name in inputs:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
        assert rel_err(grads[name], grads64[name]) < FP32_TOL, name


@pytest.mark.parametrize("chunk_size", [1, 4, 16, 128])
def test_any_chunk_size_and_optional_inputs(chunk_size):
    """No optional inputs, D per channel, dt limits: the same function whatever the chunking."""
    inp = make_inputs(L=37, heads=4, groups=2, D_per_dim=True, seed=chunk_size)
    for opts in (dict(), dict(D=inp["D"], dt_bias=inp["dt_bias"], dt_softplus=True, dt_limit=(0.3, 0.6))):
        args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
        if not opts:
            args[1] = args[1].abs()  # dt used as given: keep it positive
        y = ssd(*args, chunk_size=chunk_size, **opts)
        y64 = ssd_sequential(*[a.double() for a in args], **{k: v.double() if torch.is_tensor(v) else v
                                                              for k, v in opts.items()})
        assert rel_err(y, y64) < FP32_TOL


def test_dt_limit_clamps_the_step():
    inp = make_inputs(L=9, seed=3)
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    lo = ssd(*args, chunk_size=4, dt_softplus=True, dt_limit=(0.5, 0.5))
    fixed = ssd(*args[:1], torch.full_like(args[1], 0.5), *args[2:], chunk_size=4)
    assert torch.allclose(lo, fixed, atol=1e-6)


@pytest.mark.parametrize("dt_shift,A_range", [(1.0, (1.0, 16.0)), (3.0, (8.0, 16.0)), (6.0, (8.0, 16.0))])
def test_strong_decay_over_long_chunks_keeps_every_gradient(dt_shift, A_range):
    """Large dt and |A| (log decays of 1 to 100 per step, thousands per chunk of 256): the segment sums are summed
    per segment, so outputs, states and every gradient keep fp32 accuracy. Prefix-sum differences gave dA errors
    of 8e-3, 5.6 and 1.0 (relative) on these three cases."""
    g = torch.Generator().manual_seed(int(dt_shift))
    batch, L, heads, p, N = 1, 512, 2, 8, 8
    inputs = dict(x=torch.randn(batch, L, heads, p, generator=g),
                  dt=torch.randn(batch, L, heads, generator=g) * 0.5 + dt_shift,
                  A=-(torch.rand(heads, generator=g) * (A_range[1] - A_range[0]) + A_range[0]),
                  B=torch.randn(batch, L, 1, N, generator=g), C=torch.randn(batch, L, 1, N, generator=g),
                  D=torch.randn(heads, generator=g), initial_states=torch.randn(batch, heads, p, N, generator=g))
    weights = (torch.randn(batch, L, heads, p, generator=g), torch.randn(batch, heads, p, N, generator=g))
    opts = dict(dt_softplus=True, return_final_states=True)
    y, state, grads = run_with_grads(lambda **t: ssd(**t, chunk_size=256, backend="reference", **opts),
                                     inputs, weights)
    y64, state64, grads64 = run_with_grads(lambda **t: ssd_sequential(**t, **opts),
                                           {k: v.double() for k, v in inputs.items()}, [w.double() for w in weights])
    assert rel_err(y, y64) < FP32_TOL and rel_err(state, state64) < FP32_TOL
    tiny = torch.finfo(torch.float32).tiny  # the initial state's gradient underflows with dt ~ 6: fp32 holds no more
    for name in inputs:
        assert torch.isfinite(grads[name]).all(), name
        if grads64[name].abs().max() > 1e6 * tiny:
            assert rel_err(grads[name], grads64[name]) < FP32_TOL, name
        else:
            assert (grads[name].double() - grads64[name]).abs().max() < 1e3 * tiny, name


def test_recurrence_is_mamba1s_scan_with_shared_dt_per_head():
    """With one group, SSD is Mamba-1's selective scan over heads * head_dim channels, each head's dt and A
    repeated over its head_dim channels and over the N states: an independent check of the definition."""
    inp = {k: v.double() for k, v in make_inputs(L=11, heads=3, head_dim=2, groups=1, N=4, seed=7).items()}
    batch, L, heads, p = inp["x"].shape
    y, state = ssd_sequential(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D=inp["D"], z=inp["z"],
                              dt_bias=inp["dt_bias"], dt_softplus=True, initial_states=inp["initial_states"],
                              return_final_states=True)

    def channels(t):  # [batch, L, heads, p] -> [batch, heads * p, L]
        return t.flatten(2).transpose(1, 2)
    y1, state1 = selective_scan_sequential(
        channels(inp["x"]), inp["dt"].repeat_interleave(p, dim=2).transpose(1, 2),
        inp["A"].repeat_interleave(p)[:, None].expand(heads * p, 4), inp["B"][:, :, 0].transpose(1, 2),
        inp["C"][:, :, 0].transpose(1, 2), D=inp["D"].repeat_interleave(p), z=channels(inp["z"]),
        delta_bias=inp["dt_bias"].repeat_interleave(p), delta_softplus=True, return_last_state=True,
        initial_state=inp["initial_states"].flatten(1, 2))
    assert torch.allclose(channels(y), y1, rtol=1e-12, atol=1e-12)
    assert torch.allclose(state.flatten(1, 2), state1, rtol=1e-12, atol=1e-12)


def test_split_sequence_continues_from_the_final_state():
    inp = make_inputs(L=40, seed=5)
    args = {k: inp[k] for k in ("x", "dt", "A", "B", "C", "D", "dt_bias")}
    full, last = ssd(**args, chunk_size=8, dt_softplus=True, return_final_states=True)
    cut = 13
    first = {k: (v[:, :cut] if v.dim() > 1 and k not in ("D",) else v) for k, v in args.items()}
    second = {k: (v[:, cut:] if v.dim() > 1 and k not in ("D",) else v) for k, v in args.items()}
    y1, s1 = ssd(**first, chunk_size=8, dt_softplus=True, return_final_states=True)
    y2, s2 = ssd(**second, chunk_size=8, dt_softplus=True, initial_states=s1, return_final_states=True)
    assert rel_err(torch.cat([y1, y2], 1), full) < 1e-6 and rel_err(s2, last) < 1e-6


def test_bf16_inputs_give_bf16_output_fp32_state():
    inp = make_inputs(L=20, seed=9, dtype=torch.bfloat16)
    y, state = ssd(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], chunk_size=8, dt_softplus=True,
                   return_final_states=True)
    y64 = ssd_sequential(*[inp[k].double() for k in ("x", "dt", "A", "B", "C")], dt_softplus=True)
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32
    assert rel_err(y, y64) < 1.5e-2


BAD = {  # case -> (argument overrides, words the error must contain)
    "groups": (dict(B=torch.randn(2, 7, 2, 4), C=torch.randn(2, 7, 2, 4)), "heads=3 is not a multiple of groups=2"),
    "chunk_3": (dict(chunk_size=3), "chunk_size=3 must be a power of two"),
    "chunk_0": (dict(chunk_size=0), "chunk_size=0 must be a power of two"),
    "chunk_float": (dict(chunk_size=64.0), "chunk_size=64.0 must be a power of two"),
    "x_3d": (dict(x=torch.randn(2, 7, 15)), "x must be [batch, L, heads, head_dim]"),
    "dt": (dict(dt=torch.randn(2, 7, 4)), "dt must have shape (2, 7, 3)"),
    "A": (dict(A=torch.randn(3, 1)), "A must have shape (3,)"),
    "C": (dict(C=torch.randn(2, 7, 1, 5)), "C must have shape (2, 7, 1, 4)"),
    "D": (dict(D=torch.randn(5)), "D must have shape (3,) or (3, 5)"),
    "states": (dict(initial_states=torch.randn(2, 3, 4, 5)), "initial_states must have shape (2, 3, 5, 4)"),
    "dtype": (dict(dt=torch.ones(2, 7, 3, dtype=torch.int64)), "dt must be a floating tensor"),
    "limit": (dict(dt_limit=(0.2, 0.1)), "dt_limit=(0.2, 0.1) must be (min, max)"),
    "empty": (dict(x=torch.randn(2, 0, 3, 5), dt=torch.randn(2, 0, 3), B=torch.randn(2, 0, 1, 4),
                   C=torch.randn(2, 0, 1, 4)), "L must be at least 1"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_naming_the_value(case):
    overrides, words = BAD[case]
    inp = make_inputs(L=7)
    args = {**dict(x=inp["x"], dt=inp["dt"], A=inp["A"], B=inp["B"], C=inp["C"], chunk_size=4), **overrides}
    with pytest.raises(ValueError, match=re.escape(words)):
        ssd(**args)


def test_backends_by_name():
    inp = make_inputs(L=5)
    args = [inp[k] for k in ("x", "dt", "A", "B", "C")]
    with pytest.raises(ValueError, match="unknown ssd backend 'fast'; allowed: auto, reference, sequential"):
        ssd(*args, chunk_size=4, backend="fast")
    assert torch.allclose(ssd(*args, chunk_size=4, backend="sequential"), ssd(*args, chunk_size=4), atol=1e-5)
    if not torch.cuda.is_available():
        with pytest.raises((ImportError, RuntimeError), match="mamba_ssm"):
            ssd(*args, chunk_size=4, backend="mamba_ssm")
    assert math.isfinite(ssd(*args, chunk_size=4).sum().item())
