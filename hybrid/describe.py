"""`python -m hybrid.describe model=NAME [overrides]`: the canonical pattern of a stack, a table of its blocks,
parameters per block kind and in total, and forward FLOPs per token at `seq_len`.

The model is built on the meta device: no memory is allocated, so any size can be described instantly.
"""
from collections import Counter

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from hybrid import layout as layouts
from hybrid.blocks import NAMES
from hybrid.checks import check_int, check_model, exit_on_usage_error
from hybrid.model import HybridLM


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(model: HybridLM, seq_len: int) -> str:
    """A printable description of `model`: one row per block, then totals by kind."""
    megatron = layouts.megatron_or_none(model.pattern) or "none: Mamba-1 'M' has no Megatron symbol"
    rows = [f"pattern   {model.pattern}   (from {model.layout_source}; Megatron: {megatron})",
            "", f"{'index':>5}  {'symbol':<6}  {'block':<10}  {'params':>12}  {'GFLOPs/token':>12}"]
    by_kind, flops_by_kind = Counter(), Counter()
    for i, layer in enumerate(model.layers):
        p, f = n_params(layer), layer.flops_per_token(seq_len)
        by_kind[layer.symbol] += p
        flops_by_kind[layer.symbol] += f
        rows.append(f"{i:>5}  {layer.symbol:<6}  {NAMES[layer.symbol]:<10}  {p:>12,}  {f / 1e9:>12.6f}")
    embed = n_params(model.embedding) + n_params(model.norm)
    if model.lm_head.weight is not model.embedding.weight:
        embed += n_params(model.lm_head)
    total = n_params(model)
    rows += ["", f"{'kind':<17}  {'count':>5}  {'params':>12}  {'share':>6}"]
    counts = layouts.counts(model.pattern)
    for s in "MAFES":
        if counts.get(s):
            rows.append(f"{s + ' ' + NAMES[s]:<17}  {counts[s]:>5}  {by_kind[s]:>12,}  {by_kind[s] / total:>6.1%}")
    rows.append(f"{'embedding+norm':<17}  {'':>5}  {embed:>12,}  {embed / total:>6.1%}")
    rows.append(f"{'total':<17}  {len(model.pattern):>5}  {total:>12,}")
    rows.append(f"\nforward FLOPs per token at seq_len={seq_len}: {model.flops_per_token(seq_len) / 1e9:.6f} GFLOPs "
                f"(multiply-add = 2; LM head included; MoE counts its k active experts)")
    return "\n".join(rows)


@hydra.main(version_base="1.3", config_path="../conf", config_name="describe")
@exit_on_usage_error
def main(cfg: DictConfig) -> None:
    """Usage errors (seq_len, sizes, backends) exit with status 2 before the model is built."""
    check_int("seq_len", cfg.seq_len)
    check_model(cfg.model)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    print(describe(model, cfg.seq_len))


if __name__ == "__main__":
    main()
