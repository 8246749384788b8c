"""The one block shape every symbol shares: a pre-norm residual sublayer, x + mixer(RMSNorm(x))."""
import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + mixer(norm(x)). A mixer returns a tensor, or (tensor, aux dict) when it has auxiliary outputs (MoE).

    forward: x [batch, L, d_model] -> (x [batch, L, d_model], aux: dict of tensors, empty for most mixers).
    """

    def __init__(self, symbol: str, mixer: nn.Module, d_model: int, norm_eps: float = 1e-5):
        super().__init__()
        self.symbol = symbol
        self.norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.mixer = mixer

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None):
        """The mixer's cache (None for stateless mixers)."""
        return self.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, cache=None) -> tuple[torch.Tensor, dict]:
        """With a cache, x continues the sequence the cache holds (the mixer updates it in place)."""
        # the stream may be fp32 under bf16 weights (HybridLM residual_in_fp32): normalise in the weights' dtype
        h = self.norm(x.to(self.norm.weight.dtype))
        out = self.mixer(h) if cache is None else self.mixer(h, cache=cache)
        aux = {}
        if isinstance(out, tuple):
            out, aux = out
        return x + out, aux

    def step(self, x: torch.Tensor, cache) -> torch.Tensor:
        """One token x [batch, d_model] -> [batch, d_model]; the mixer's cache advances in place."""
        out = self.mixer.step(self.norm(x.to(self.norm.weight.dtype)), cache)
        if isinstance(out, tuple):
            out = out[0]
        return x + out

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token (a multiply-add counts 2), the norm's few ops left out."""
        return self.mixer.flops_per_token(seq_len)
