"""The causal depthwise conv1d (+ SiLU) in PyTorch: the definition every test compares against, and the CPU backend.

    out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (K-1) + k])     (x = 0 before t = 0)

which is nn.Conv1d(dim, dim, K, groups=dim, padding=K-1) with the right padding dropped.
"""
import torch
import torch.nn.functional as F


def causal_conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                            activation: str | None = "silu") -> torch.Tensor:
    """x: [batch, dim, L] (any strides); weight: [dim, K]; bias: [dim] or None -> [batch, dim, L] in x's dtype."""
    K = weight.shape[1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=K - 1, groups=x.shape[1])[..., :x.shape[2]]
    return F.silu(out) if activation == "silu" else out
