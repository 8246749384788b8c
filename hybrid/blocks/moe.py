"""`E`: a mixture of SwiGLU experts with a top-k softmax router.

Every token goes to its k best experts (no capacity limit, so no token is dropped). The router returns a
Switch-Transformer load-balancing loss, n_experts * sum_i f_i * P_i (f_i: the fraction of routed slots that
went to expert i, P_i: the mean router probability of expert i), equal to 1 when routing is uniform, which
the model hands to the trainer, and the per-expert token counts for logging.

The experts run on the routed slots sorted by expert (one gather), as one grouped matmul per projection
(`F.grouped_mm`, on CUDA in bf16, where torch has it) or, elsewhere, a loop over the contiguous per-expert slices
(one host read of the counts per forward, not one per expert); the slots go back to their tokens by an index copy
(a permutation) and a sum over the k slots: no atomics, deterministic.
"""
import torch
import torch.nn.functional as F
from torch import nn

from hybrid.blocks.mlp import SwiGLU


class MoE(nn.Module):
    """forward: x [batch, L, d_model] -> (y [batch, L, d_model], {"moe_aux_loss": scalar, "expert_counts": [n_experts]})."""

    def __init__(self, d_model: int, n_experts: int = 8, top_k: int = 2, d_hidden: int | None = None,
                 renormalize: bool = True, bias: bool = False):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"MoE top_k={top_k} must be between 1 and n_experts={n_experts}")
        self.n_experts, self.top_k, self.renormalize = n_experts, top_k, renormalize
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_hidden, bias=bias) for _ in range(n_experts))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None) -> None:
        return None  # stateless: each token routed on its own

    def step(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """One token per sequence x [batch, d_model] -> [batch, d_model]: every expert runs on the batch, weighted by
        the router (zero for the experts not chosen), so shapes are static and nothing syncs with the host (a CUDA
        graph can capture it; forward's routing by index needs the host to know the token counts)."""
        probs = F.softmax(self.router(x).float(), dim=-1)  # [batch, n_experts]
        weights, chosen = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        dense = torch.zeros_like(probs).scatter(-1, chosen, weights).to(x.dtype)  # [batch, n_experts]
        return sum(expert(x) * dense[:, e, None] for e, expert in enumerate(self.experts))

    def forward(self, x: torch.Tensor, cache=None):
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [T, d_model], T = batch * L
        probs = F.softmax(self.router(x).float(), dim=-1)  # [T, n_experts], fp32 for a stable softmax
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [T, k]
        if self.renormalize:  # Mixtral renormalises the k weights to sum to 1; Jamba does not
            weights = weights / weights.sum(-1, keepdim=True)
        counts = torch.bincount(chosen.flatten(), minlength=self.n_experts)  # [n_experts]
        order = torch.argsort(chosen.flatten(), stable=True)  # [T k] routed slots, grouped by expert
        h = self._experts(x[order // self.top_k], counts)  # [T k, d_model], sorted slots
        h = h.new_empty(h.shape).index_copy(0, order, h)  # back to slot order: [T k, d_model]
        y = (h.view(-1, self.top_k, h.shape[-1]) * weights[..., None].to(x.dtype)).sum(1).to(x.dtype)
        fraction = counts.float() / chosen.numel()  # f_i
        aux = self.n_experts * (fraction * probs.mean(0)).sum()
        return y.reshape(shape), {"moe_aux_loss": aux, "expert_counts": counts}

    def _experts(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """xs [S, d_model], its rows grouped by expert (counts [n_experts] rows each) -> the experts' outputs [S, d_model]."""
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else xs.dtype
        e0 = self.experts[0]
        if (xs.is_cuda and dtype == torch.bfloat16 and hasattr(F, "grouped_mm") and e0.gate_proj.bias is None
                and e0.down_proj.bias is None):
            offs = torch.cumsum(counts, 0).to(torch.int32)  # each expert's end row
            stack = lambda name: torch.stack([getattr(e, name).weight for e in self.experts]).to(dtype)  # [E, out, in]
            mm = lambda a, name: F.grouped_mm(a, stack(name).transpose(1, 2), offs=offs)
            xs = xs.to(dtype)
            return mm(F.silu(mm(xs, "gate_proj")) * mm(xs, "up_proj"), "down_proj")
        parts = xs.split(counts.tolist())  # one host read of the counts
        return torch.cat([expert(part) for expert, part in zip(self.experts, parts)])

    def flops_per_token(self, seq_len: int) -> int:
        """Active FLOPs: the router plus k experts."""
        return 2 * self.router.in_features * self.n_experts + self.top_k * self.experts[0].flops_per_token(seq_len)
