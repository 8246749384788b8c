"""Selective-scan inputs shared by the benches and the tests: values like a Mamba block's, in a chosen memory layout.

Layouts of a [batch, rows, L] tensor (u, delta, z with rows = dim; B, C with rows = N):
    contiguous      [batch, rows, L] memory (mamba-ssm's layout)
    block           a view of [rows, batch, L] memory: feature-major, steps contiguous (what our Mamba block makes)
    channels_last   a view of [batch, L, rows] memory (what a Linear on [batch, L, features] makes)
"""
import torch

LAYOUTS = {
    "contiguous": lambda t: t.contiguous(),
    "block": lambda t: t.transpose(0, 1).contiguous().transpose(0, 1),
    "channels_last": lambda t: t.transpose(1, 2).contiguous().transpose(1, 2),
}
SEQUENCE_TENSORS = ("u", "delta", "z", "B", "C")  # [batch, rows, L]; the others are per channel


def in_layout(inputs: dict, layout: str) -> dict:
    """The same values with the [batch, rows, L] tensors in `layout` (one of LAYOUTS); leaves that required grad
    are fresh leaves that require grad."""
    out = {}
    for k, v in inputs.items():
        if k in SEQUENCE_TENSORS and v is not None and v.dim() == 3:
            v = LAYOUTS[layout](v.detach()).requires_grad_(v.requires_grad)
        out[k] = v
    return out


def scan_inputs(batch, dim, N, L, dtype, device, seed=0, layout="contiguous") -> dict:
    """Inputs like a Mamba block's (S4D-real A, softplus'd delta around 0.01..0.1), all requiring grad.

    u, delta, z: [batch, dim, L] in dtype; B, C: [batch, N, L] in dtype; A: [dim, N], D, delta_bias: [dim] fp32.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, dt=dtype, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dt).requires_grad_(True)

    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)  # [dim, N]
    dt_bias = torch.log(torch.expm1(torch.empty(dim).uniform_(0.01, 0.1, generator=g)))  # softplus^-1
    x = dict(u=rnd(batch, dim, L), delta=rnd(batch, dim, L, scale=0.1), A=A.to(device).requires_grad_(True),
             B=rnd(batch, N, L), C=rnd(batch, N, L), D=rnd(dim, dt=torch.float32), z=rnd(batch, dim, L),
             delta_bias=dt_bias.to(device).requires_grad_(True))
    return in_layout(x, layout) if layout != "contiguous" else x
