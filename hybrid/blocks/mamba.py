"""`M`: the Mamba-1 mixer (Gu & Dao, 2023), on `hybrid.kernels.selective_scan`.

    x, z = in_proj(x)                       two branches of width d_inner = expand * d_model
    x = silu(causal depthwise conv1d(x))    hybrid.kernels.causal_conv1d (fused Triton kernel on CUDA)
    dt, B, C = x_proj(x)                    dt of rank dt_rank, B and C of size d_state, all input-dependent
    y = selective_scan(x, dt_proj(dt), A = -exp(A_log), B, C, D, z, delta_bias, softplus)
    out = out_proj(y)                       y already gated by silu(z) inside the scan

`selective=False` is the paper's LTI ablation: dt, B and C become learned parameters that do not depend on
the input (dt one value per channel through delta_bias, B and C [d_inner, d_state]), on the same scan.

`gate=False` drops the SiLU(z) gate (the Mamba paper's "no gate" variant in its selective-copying table):
in_proj then makes only the x branch.

`dt_bc_norm=True` is Jamba's variant: an RMSNorm (eps `dt_bc_norm_eps`, modules `dt_layernorm`, `b_layernorm`,
`c_layernorm`, as Hugging Face names them) on each of dt, B and C right after x_proj, before dt_proj and the scan.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from hybrid.blocks import mamba_inference
from hybrid.kernels.causal_conv1d import causal_conv1d
from hybrid.kernels.selective_scan import selective_scan


class Mamba(nn.Module):
    """forward: x [batch, L, d_model] -> [batch, L, d_model]."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 selective: bool = True, scan_backend: str = "auto", dt_bc_norm: bool = False,
                 dt_bc_norm_eps: float = 1e-6, gate: bool = True, conv_backend: str = "auto"):
        super().__init__()
        if dt_bc_norm and not selective:
            raise ValueError("dt_bc_norm=True normalises the input-dependent dt, B and C; it needs selective=True")
        d_inner = expand * d_model
        self.d_inner, self.d_state, self.d_conv = d_inner, d_state, d_conv
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.selective, self.scan_backend, self.gate = selective, scan_backend, gate
        self.conv_backend = conv_backend  # hybrid.kernels.causal_conv1d: auto | reference | triton
        self.in_proj = nn.Linear(d_model, (2 if gate else 1) * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        if selective:
            self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
            self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.dt_bc_norm = dt_bc_norm
        if dt_bc_norm:  # Jamba: RMSNorm on dt [.., dt_rank], B and C [.., d_state]
            self.dt_layernorm = nn.RMSNorm(self.dt_rank, eps=dt_bc_norm_eps)
            self.b_layernorm = nn.RMSNorm(d_state, eps=dt_bc_norm_eps)
            self.c_layernorm = nn.RMSNorm(d_state, eps=dt_bc_norm_eps)
        if not selective:  # LTI: the same dt, B, C at every step
            self.B = nn.Parameter(torch.empty(d_inner, d_state))
            self.C = nn.Parameter(torch.empty(d_inner, d_state))
            self.dt_bias = nn.Parameter(torch.empty(d_inner))
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.out_proj.is_residual_out = True
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """Mamba's own init, which the model's generic init leaves alone (`_no_generic_init`):
        A = -[1..N] per channel (S4D-real), D = 1, dt bias such that softplus(bias) ~ LogUniform[dt_min, dt_max]."""
        N = self.d_state
        self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(self.d_inner, N))
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(self.dt_max) - math.log(self.dt_min))
                       + math.log(self.dt_min)).clamp(min=self.dt_init_floor)
        inv_softplus = dt + torch.log(-torch.expm1(-dt))  # softplus(inv_softplus) == dt
        if self.selective:
            std = self.dt_rank ** -0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(inv_softplus)
            self.dt_proj.bias._no_generic_init = True
            self.dt_proj.weight._no_generic_init = True
        else:
            self.dt_bias.copy_(inv_softplus)
            nn.init.normal_(self.B, std=self.d_state ** -0.5)
            nn.init.normal_(self.C, std=self.d_state ** -0.5)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, device=None):
        """Zero conv and SSM states (mamba_inference.MambaCache); their size does not depend on max_seqlen."""
        return mamba_inference.allocate(self, batch_size, dtype, device)

    def step(self, x: torch.Tensor, cache) -> torch.Tensor:
        """One token x [batch, d_model] -> [batch, d_model]; the cache advances in place."""
        return mamba_inference.step(self, x, cache)

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        if cache is not None and not cache.empty:  # continue the sequence the cache holds (mamba_inference.py)
            return mamba_inference.prefill(self, x, cache)
        batch, L, _ = x.shape
        # Feature-major: every [batch, rows, L] tensor below is a view of [rows, batch * L] memory (steps contiguous:
        # what the scan and the conv read best). The projections are matmuls with transposed operands (no copies;
        # autograd's mm backward returns each gradient in its input's layout, so the backward stays copy-free too).
        fm = lambda t: t.view(t.shape[0], batch, L).transpose(0, 1)  # [rows, batch L] -> [batch, rows, L] view
        xz = self.in_proj.weight @ x.reshape(batch * L, -1).T  # [(2) d_inner, batch L]
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        u, z = (fm(xz[:self.d_inner]), fm(xz[self.d_inner:])) if self.gate else (fm(xz), None)
        conv_input = u
        u = causal_conv1d(u, self.conv1d.weight[:, 0], self.conv1d.bias, "silu", backend=self.conv_backend)
        u_rows = u.transpose(0, 1).reshape(self.d_inner, batch * L)  # a view (u keeps the conv input's layout)
        A = -torch.exp(self.A_log.float())  # [d_inner, N]
        if self.selective:
            sizes = [self.dt_rank, self.d_state, self.d_state]
            if self.dt_bc_norm:  # Jamba's RMSNorms run over the features: rows [batch L, features] here
                dt, B, C = (u_rows.T @ self.x_proj.weight.T).split(sizes, dim=-1)
                dt, B, C = self.dt_layernorm(dt).T, self.b_layernorm(B).T, self.c_layernorm(C).T
                B, C = B.contiguous(), C.contiguous()  # [N, batch L]: small (N rows), steps contiguous
            else:
                dt, B, C = (self.x_proj.weight @ u_rows).split(sizes, dim=0)  # [rows, batch L]
            delta = fm(self.dt_proj.weight @ dt)  # [batch, d_inner, L]; its bias goes to the scan
            B, C = fm(B), fm(C)  # [batch, N, L]
            delta_bias = self.dt_proj.bias.float()
        else:
            delta = torch.zeros_like(u)  # softplus(0 + dt_bias): one dt per channel
            B, C, delta_bias = self.B, self.C, self.dt_bias.float()
        y = selective_scan(u, delta, A, B, C, D=self.D.float(), z=z, delta_bias=delta_bias, delta_softplus=True,
                           return_last_state=cache is not None, backend=self.scan_backend)
        if cache is not None:  # a prefill into an empty cache: this forward's layout, no history to prepend
            y, last_state = y
            mamba_inference.fill_empty(cache, conv_input, last_state)
        y_rows = y.transpose(0, 1).reshape(self.d_inner, batch * L)  # a view: y comes back in u's layout
        return F.linear(y_rows.T, self.out_proj.weight, self.out_proj.bias).view(batch, L, -1)

    def flops_per_token(self, seq_len: int) -> int:
        """Projections, the conv, and about 9 * d_inner * d_state for the scan (discretise, update, readout)."""
        proj = self.in_proj.in_features * self.in_proj.out_features
        proj += self.out_proj.in_features * self.out_proj.out_features
        if self.selective:
            proj += self.x_proj.in_features * self.x_proj.out_features + self.dt_rank * self.d_inner
        return 2 * proj + 2 * self.d_inner * self.d_conv + 9 * self.d_inner * self.d_state
