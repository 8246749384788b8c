"""The `S` block (hybrid.blocks.mamba2.Mamba2) beside mamba-ssm's `Mamba2` module, forward + backward.

Used by `python -m hybrid.bench ssd --block`. mamba-ssm's module runs with use_mem_eff_path=False and without the
causal-conv1d package's CUDA conv (its nn.Conv1d path), the issue's target; ours with its defaults (our Triton conv
and fused gated RMSNorm on CUDA) once per SSD backend, and once with the PyTorch norm (norm_backend="torch"). Same
options (d_state 128, headdim 64, one group, chunk 256), same weights (mamba-ssm's parameter names are ours).
"""
import sys

import torch

from hybrid.bench.harness import safe_measure

SHAPES = {"cuda": dict(batch=8, L=2048, d_model=1024, dtype=torch.bfloat16,
                       backends=("triton", "triton torch_norm")),
          "cpu": dict(batch=1, L=128, d_model=64, dtype=torch.float32, backends=("reference",))}


def _ours(d_model, backend, opts):
    """Our S block with SSD backend `backend`; "triton torch_norm": with the PyTorch gated RMSNorm instead of the fused
    one that is the default on CUDA (norm_backend="torch")."""
    from hybrid.blocks.mamba2 import Mamba2
    if backend == "triton torch_norm":
        return Mamba2(d_model, ssd_backend="triton", norm_backend="torch", **opts)
    return Mamba2(d_model, ssd_backend=backend, **opts)


def block_rows(device: str, d_model: int | None = None) -> list[dict]:
    """Rows op "block", mode "fwd+bwd", provider "ours:S <backend>" or "mamba_ssm Mamba2"; x the sequence length."""
    shape = dict(SHAPES[device])
    d_model = d_model or shape["d_model"]
    opts = dict(d_state=128 if device == "cuda" else 16, headdim=64 if device == "cuda" else 16, ngroups=1,
                chunk_size=256 if device == "cuda" else 32)
    torch.manual_seed(0)
    blocks = {}
    try:
        from mamba_ssm.modules.mamba2 import Mamba2 as Theirs
        theirs = Theirs(d_model, use_mem_eff_path=False, **opts).to(device)
    except Exception as err:  # noqa: BLE001 - not installed or not runnable here: skip it, say why
        print(f"mamba_ssm Mamba2: not timed ({type(err).__name__}: {str(err)[:200]})", file=sys.stderr)
        theirs = None
    for backend in shape["backends"]:
        ours = _ours(d_model, backend, opts).to(device)
        if theirs is not None:
            ours.load_state_dict(theirs.state_dict())
        blocks[f"ours:S {backend}"] = ours.to(shape["dtype"])
    if theirs is not None:
        blocks["mamba_ssm Mamba2"] = theirs.to(shape["dtype"])
    x = torch.randn(shape["batch"], shape["L"], d_model, device=device, dtype=shape["dtype"], requires_grad=True)
    # Two rounds, the second in reverse order, and the rows from the second: on the H200 whichever block was timed
    # first came out ~0.5 ms slower (sessions 7 and 9 swapped the fused and PyTorch norms' order, and their ranking
    # with it). Each row keeps its first round's median, so an order effect stays visible.
    rows, first_round = [], {}
    for name in [*blocks, *reversed(blocks)]:
        res = safe_measure(lambda t, m=blocks[name]: m(t["x"]), {"x": x}, "fwd+bwd", device)
        print(f"  block {name} d_model {d_model} batch {shape['batch']} L {shape['L']}: {res['median_ms']} ms"
              f" (round {1 + (name in first_round)})", file=sys.stderr, flush=True)
        if name not in first_round:
            first_round[name] = res["median_ms"]
            continue
        rows.append(dict(op="block", provider=name, mode="fwd+bwd", L=shape["L"], batch=shape["batch"],
                         d_model=d_model, first_round_median_ms=first_round[name], **res))
    return rows
