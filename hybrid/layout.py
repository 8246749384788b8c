"""Layouts: which block sits at which depth, as one canonical pattern string.

A stack is a string over five symbols, one pre-norm residual sublayer each:
`M` Mamba-1, `A` attention, `F` MLP (SwiGLU), `E` MoE, `S` Mamba-2. Four ways in, in order of precedence (see
`resolve`):

1. pattern: written out in our letters; Megatron-LM's `*` and `-` are accepted as aliases of `A` and `F`, but `M`
   is always OUR Mamba-1 here. Whitespace and `|` (Megatron's pipeline-stage separator) are ignored.
       parse("MF MF | A*F-")                      -> "MFMFAAFF"

2. megatron: a pattern in Megatron-LM's hybrid alphabet, with Megatron's meaning: its `M` is a Mamba-2 layer, so
   it becomes our `S` (`*` -> A, `-` -> F, `E` -> E).
       from_megatron("M-M-*-M-")                  -> "SFSFAFSF"

3. jamba: Hugging Face `JambaConfig`'s period/offset rule. A Jamba layer is two symbols (mixer, then
   MLP or MoE), so `n_layers` Jamba layers give 2 * n_layers symbols.
       from_jamba(8, attn_layer_period=8, attn_layer_offset=4,
                  expert_layer_period=2, expert_layer_offset=1)  -> "MFMEMFMEAFMEMFME"

4. n_layers + ratios: target fractions of A, F and E among n_layers sublayers, the rest Mamba (`M`, or `S` with
   `mamba: S`, which is Megatron's own stack), placed by the same rule as Megatron-LM's ratio allocator
   (`hybrid_attention_ratio`, `hybrid_mlp_ratio`).
       from_ratios(8, {"A": 0.125, "F": 0.5})     -> "MFMFAFMF"   (Megatron: "M-M-*-M-", with mamba="S")

`to_megatron` writes a pattern in Megatron's alphabet: `S` -> `M`; our Mamba-1 `M` has no Megatron symbol and is
an error (never silently turned into a Mamba-2 layer). `counts` tallies symbols.
"""
from __future__ import annotations

import logging
import math
import operator
from collections.abc import Mapping

log = logging.getLogger(__name__)

SYMBOLS = "MAFES"                      # every symbol of the canonical alphabet
_ALIASES = {"*": "A", "-": "F"}        # Megatron's symbols accepted in our patterns
_FROM_MEGATRON = {"M": "S", "*": "A", "-": "F", "E": "E"}  # Megatron's M is a Mamba-2 layer
_TO_MEGATRON = {v: k for k, v in _FROM_MEGATRON.items()}
MAMBA_KINDS = ("M", "S")               # the symbols that may fill what the ratios leave
_IGNORED = set(" \t\r\n|")
RATIO_KEYS = ("A", "F", "E")           # placed in this order; Mamba takes what is left
JAMBA_KEYS = ("n_layers", "attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset")
LAYOUT_KEYS = ("pattern", "megatron", "n_layers", "ratios", "mamba", "jamba")


def parse(pattern: str) -> str:
    """The canonical pattern of `pattern`: our letters (`M` = Mamba-1), Megatron's `* -` mapped to `A F`,
    whitespace and `|` dropped. Raises on an empty pattern or an unknown symbol. A pattern in Megatron's alphabet
    whose `M` means Mamba-2 goes through `from_megatron`."""
    if not isinstance(pattern, str):
        raise TypeError(f"a layout pattern must be a string, got {type(pattern).__name__} {pattern!r}")
    out = []
    for ch in pattern:
        if ch in _IGNORED:
            continue
        sym = _ALIASES.get(ch, ch)
        if sym not in SYMBOLS:
            raise ValueError(f"unknown block symbol '{ch}' in pattern '{pattern}'; "
                             f"allowed: M, A, F, E, S (or Megatron's * -)")
        out.append(sym)
    if not out:
        raise ValueError(f"empty layout pattern {pattern!r}: write at least one of M, A, F, E, S "
                         f"(or Megatron's * -)")
    return "".join(out)


def from_megatron(pattern: str) -> str:
    """Our canonical pattern of a Megatron-LM hybrid pattern (`hybrid_override_pattern`): Megatron's `M` is a
    Mamba-2 layer, so M -> S, * -> A, - -> F, E -> E; whitespace and `|` dropped. Our own letters A, F, S are an
    error here (they mean nothing to Megatron), as is an empty pattern.
        from_megatron("M-M-*-M-") -> "SFSFAFSF"
    """
    if not isinstance(pattern, str):
        raise TypeError(f"a Megatron pattern must be a string, got {type(pattern).__name__} {pattern!r}")
    out = []
    for ch in pattern:
        if ch in _IGNORED:
            continue
        if ch not in _FROM_MEGATRON:
            raise ValueError(f"unknown Megatron symbol '{ch}' in pattern '{pattern}'; Megatron's hybrid alphabet "
                             f"is M (Mamba-2), * (attention), - (MLP), E (MoE)")
        out.append(_FROM_MEGATRON[ch])
    if not out:
        raise ValueError(f"empty Megatron pattern {pattern!r}: write at least one of M * - E")
    return "".join(out)


def to_megatron(pattern: str) -> str:
    """`pattern` (any form `parse` accepts) in Megatron-LM's alphabet: S -> 'M', A -> '*', F -> '-', E -> 'E'.

    Megatron's `M` is a Mamba-2 layer, so our Mamba-1 `M` has no Megatron symbol: that is an error naming the
    positions (use `S` to build the stack with Mamba-2). from_megatron(to_megatron(p)) == p for every such p."""
    canonical = parse(pattern)
    mamba1 = [i for i, s in enumerate(canonical) if s == "M"]
    if mamba1:
        raise ValueError(f"pattern '{canonical}' has Mamba-1 'M' blocks at positions {mamba1}: Megatron-LM's 'M' is "
                         f"a Mamba-2 layer and it has no Mamba-1, so this stack has no Megatron form (use 'S', "
                         f"our Mamba-2, for a Megatron-compatible stack)")
    return "".join(_TO_MEGATRON[s] for s in canonical)


def megatron_or_none(pattern: str) -> str | None:
    """to_megatron(pattern), or None when the stack has Mamba-1 blocks (no Megatron form)."""
    return None if "M" in parse(pattern) else to_megatron(pattern)


def counts(pattern: str) -> dict[str, int]:
    """How many sublayers of each kind `pattern` has, e.g. {"M": 3, "A": 1, "F": 4, "E": 0, "S": 0}."""
    canonical = parse(pattern)
    return {s: canonical.count(s) for s in SYMBOLS}


# ---------------------------------------------------------------------------------------------- ratios

def _as_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def _check_fractions(n_layers: int, ratios: Mapping) -> dict[str, float]:
    """Validated fractions {A, F, E} (missing or None -> 0.0); raises on anything from_ratios forbids."""
    if not isinstance(ratios, Mapping):
        raise TypeError(f"ratios must be a mapping like {{'A': 0.125, 'F': 0.5}}, got {ratios!r}")
    fractions = dict.fromkeys(RATIO_KEYS, 0.0)
    for key, value in ratios.items():
        if key not in RATIO_KEYS:
            raise ValueError(f"unknown ratio key {key!r} in {dict(ratios)}; allowed: A, F, E "
                             f"(Mamba takes the rest: 'M', or 'S' with mamba='S')")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise TypeError(f"ratio {key}={value!r} must be a number between 0 and 1")
        if value < 0:
            raise ValueError(f"ratio {key}={value} is negative; fractions must lie in [0, 1]")
        fractions[key] = float(value)
    total = sum(fractions.values())
    if total > 1 + 1e-9:  # slack for sums like 0.1 + 0.2 + 0.7
        raise ValueError(f"ratios {fractions} sum to {total:g} > 1; the fractions of A, F and E together "
                         f"may be at most 1 (Mamba takes the rest)")
    for key, frac in fractions.items():
        if frac > 0 and round(n_layers * frac) == 0:
            raise ValueError(
                f"ratio {key}={frac} gives round({n_layers} * {frac}) = 0 layers; use n_layers >= "
                f"{_smallest_n(frac)} for this fraction, or {key} > {0.5 / n_layers:g} for n_layers={n_layers}")
    return fractions


def _smallest_n(frac: float) -> int:
    """The smallest n with round(n * frac) >= 1 (round half to even, so n * frac must exceed 0.5)."""
    n = max(1, math.floor(0.5 / frac) + 1)
    while round(n * frac) < 1:                       # guard against float error in 0.5 / frac
        n += 1
    while n > 1 and round((n - 1) * frac) >= 1:
        n -= 1
    return n


def _spread(slots: list[str], symbol: str, k: int, gap: float) -> None:
    """Turn k of the 'M' entries of `slots` into `symbol`, in place, one every `gap` Mamba slots.

    A running budget starts at `gap`; each Mamba slot passed costs 1, and a slot is taken once the budget falls
    below one half, which refills it by `gap`. With gap = remaining / (k + 1) the k picks split the leftover
    Mamba into k + 1 near-equal runs (ends included); with gap = remaining / k the last pick is the last slot.
    """
    budget = gap
    for i, s in enumerate(slots):
        if s != "M":
            continue
        if budget < 0.5:
            slots[i] = symbol
            budget += gap
        else:
            budget -= 1


def from_ratios(n_layers: int, ratios: Mapping[str, float], mamba: str = "M") -> str:
    """A pattern of `n_layers` sublayers with target fractions `ratios` of A, F and E; Mamba takes the rest
    (`mamba`: "M" Mamba-1, or "S" Mamba-2, which is what Megatron's allocator builds).

    Identical output to Megatron-LM's ratio allocator (`allocate_layers` / `pattern_from_ratios` in
    megatron/core/(ssm|models/hybrid)/..._layer_allocation.py) for any A and F it accepts:
      * rounding: each kind gets round(n_layers * fraction) layers, Python's round (half to even:
        2.5 -> 2, 1.5 -> 2), exactly the expression Megatron evaluates;
      * A first, over all slots: the a attention layers cut the Mamba into a + 1 runs of near-equal
        length, as far apart as possible, starting and ending with Mamba (`_spread` with remaining / (a + 1));
      * F next, over the slots still Mamba: spread evenly, right-justified (the last F takes the last Mamba
        slot), never replacing attention (`_spread` with remaining / f);
      * E last: Megatron's allocator has no MoE ratio, so E is placed exactly as F is, over the slots
        still Mamba after F. With E = 0 the result is Megatron's, symbol for symbol.
    Stricter than Megatron (which would silently under-allocate): a positive fraction that rounds to zero
    layers, or rounded counts summing above n_layers (e.g. n_layers=3, A=F=0.5 -> 2 + 2), are errors.
    `None` values count as 0. Example: from_ratios(10, {"A": 0.3, "F": 0.3}) -> "MFAMMAFAMF".
    """
    n_layers = _as_int(n_layers, "n_layers")
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers} must be at least 1")
    if mamba not in MAMBA_KINDS:
        raise ValueError(f"mamba={mamba!r}: the Mamba that takes the slots the ratios leave is 'M' (Mamba-1) or "
                         f"'S' (Mamba-2)")
    fractions = _check_fractions(n_layers, ratios)
    wanted = {key: round(n_layers * fractions[key]) for key in RATIO_KEYS}
    if sum(wanted.values()) > n_layers:
        raise ValueError(f"ratios {fractions} round to {wanted} = {sum(wanted.values())} layers, more than "
                         f"n_layers={n_layers}; lower a fraction or change n_layers")
    slots = ["M"] * n_layers
    mamba_left = n_layers
    for key in RATIO_KEYS:
        k = wanted[key]
        if k == 0:
            continue
        mamba_left -= k
        # Attention splits the Mamba into k + 1 runs; F and E into k (right-justified), as Megatron does.
        _spread(slots, key, k, mamba_left / (k + 1) if key == "A" else mamba_left / k)
    pattern = "".join(slots)
    assert all(pattern.count(key) == wanted[key] for key in RATIO_KEYS), (pattern, wanted)
    return pattern.replace("M", mamba)


# ---------------------------------------------------------------------------------------------- jamba

def from_jamba(n_layers: int, attn_layer_period: int, attn_layer_offset: int,
               expert_layer_period: int, expert_layer_offset: int) -> str:
    """The pattern of a Jamba stack, as Hugging Face `JambaConfig` lays it out: 2 * n_layers symbols.

    Jamba layer i is a mixer then a feed-forward: the mixer is attention (`A`) iff
    i % attn_layer_period == attn_layer_offset, else Mamba (`M`); the feed-forward is MoE (`E`) iff
    i % expert_layer_period == expert_layer_offset, else MLP (`F`). Offsets must be below their periods.
    Example: from_jamba(8, 8, 4, 2, 1) -> "MFMEMFMEAFMEMFME".
    """
    n_layers = _as_int(n_layers, "n_layers")
    if n_layers < 1:
        raise ValueError(f"jamba n_layers={n_layers} must be at least 1")
    attn_layer_period, attn_layer_offset = _period_offset("attn", attn_layer_period, attn_layer_offset)
    expert_layer_period, expert_layer_offset = _period_offset("expert", expert_layer_period, expert_layer_offset)
    out = []
    for i in range(n_layers):
        out.append("A" if i % attn_layer_period == attn_layer_offset else "M")
        out.append("E" if i % expert_layer_period == expert_layer_offset else "F")
    return "".join(out)


def _period_offset(kind: str, period, offset) -> tuple[int, int]:
    period = _as_int(period, f"{kind}_layer_period")
    offset = _as_int(offset, f"{kind}_layer_offset")
    if period < 1:
        raise ValueError(f"{kind}_layer_period={period} must be at least 1")
    if not 0 <= offset < period:
        raise ValueError(f"{kind}_layer_offset={offset} must satisfy 0 <= offset < {kind}_layer_period={period}")
    return period, offset


# ---------------------------------------------------------------------------------------------- resolve

def resolve(layout: Mapping) -> tuple[str, str]:
    """(canonical pattern, source) from a `model.layout` config node (dict or OmegaConf DictConfig).

    Keys: `pattern` (str, our letters), `megatron` (str, Megatron's alphabet: its M is our S), `jamba` (mapping of
    from_jamba's arguments), `n_layers` (int), `ratios` (mapping {A, F, E: fraction}) and `mamba` (M or S: what
    the ratios leave, default M); unset ones are None or absent. Precedence:
      1. `pattern` if set                        -> source "pattern"
      2. else `megatron` if set                  -> source "megatron"
      3. else `jamba` if set                     -> source "jamba"
      4. else `n_layers` + `ratios` (both set)   -> source "ratios"   (`ratios: {}` means all Mamba)
    Lower-precedence forms that are also set are ignored, and that is logged (logging.info), so that
    `model.layout.pattern=MFMFAFMF` on the command line overrides a config that holds ratios.
    """
    if not isinstance(layout, Mapping):
        raise TypeError(f"a layout must be a mapping with keys {', '.join(LAYOUT_KEYS)}, got {layout!r}")
    unknown = [k for k in layout if k not in LAYOUT_KEYS]
    if unknown:
        raise ValueError(f"unknown layout key(s) {unknown}; allowed: {', '.join(LAYOUT_KEYS)}")
    pattern, megatron, jamba, n_layers, ratios = (layout.get(k) for k in
                                                  ("pattern", "megatron", "jamba", "n_layers", "ratios"))
    lower = [("megatron", megatron), ("jamba", jamba), ("n_layers", n_layers), ("ratios", ratios)]

    if pattern is not None:
        _log_ignored("pattern", [name for name, v in lower if v is not None])
        return parse(pattern), "pattern"
    if megatron is not None:
        _log_ignored("megatron", [name for name, v in lower[1:] if v is not None])
        return from_megatron(megatron), "megatron"
    if jamba is not None:
        _log_ignored("jamba", [name for name, v in lower[2:] if v is not None])
        return from_jamba(**_jamba_args(jamba)), "jamba"
    if n_layers is not None and ratios is not None:
        return from_ratios(n_layers, ratios, layout.get("mamba") or "M"), "ratios"
    if n_layers is None and ratios is None:
        raise ValueError("no layout given: set one of model.layout.pattern (e.g. 'MFMFAFMF'), "
                         "model.layout.megatron (e.g. 'M-M-*-M-', Megatron's M being Mamba-2), "
                         "model.layout.jamba (n_layers, attn_layer_period, attn_layer_offset, "
                         "expert_layer_period, expert_layer_offset), or model.layout.n_layers + "
                         "model.layout.ratios (e.g. 8 and {A: 0.125, F: 0.5})")
    missing, given = ("ratios", f"n_layers={n_layers}") if ratios is None else ("n_layers", f"ratios={ratios}")
    raise ValueError(f"layout has {given} but no {missing}: the ratios form needs both n_layers and ratios "
                     f"(ratios: {{}} for all Mamba), or set a pattern or jamba instead")


def _log_ignored(used: str, ignored: list[str]) -> None:
    if ignored:
        log.info("layout: using %s; ignoring %s (lower precedence: pattern > megatron > jamba > n_layers + ratios)",
                 used, ", ".join(ignored))


def _jamba_args(jamba) -> dict:
    if not isinstance(jamba, Mapping):
        raise TypeError(f"layout.jamba must be a mapping with keys {', '.join(JAMBA_KEYS)}, got {jamba!r}")
    missing = [k for k in JAMBA_KEYS if jamba.get(k) is None]
    unknown = [k for k in jamba if k not in JAMBA_KEYS]
    if missing or unknown:
        raise ValueError(f"layout.jamba {dict(jamba)} has missing keys {missing} / unknown keys {unknown}; "
                         f"it needs exactly: {', '.join(JAMBA_KEYS)}")
    return {k: jamba[k] for k in JAMBA_KEYS}
