"""hybrid.layout: parsing, Megatron ratio allocation, Jamba period/offset layouts, precedence in resolve."""
import logging
import re

import pytest

from hybrid.layout import counts, from_jamba, from_megatron, from_ratios, megatron_or_none, parse, resolve, to_megatron

UNKNOWN_MSG = "allowed: M, A, F, E, S (or Megatron's * -)"


# ------------------------------------------------------------------------------------------------ parse

@pytest.mark.parametrize("given, canonical", [
    ("MFMFAFMF", "MFMFAFMF"),
    ("M-M-*-M-", "MFMFAFMF"),          # Megatron's alphabet
    ("M*M* E", "MAMAE"),               # whitespace ignored
    ("MM*-|MM*-\n", "MMAFMMAF"),       # Megatron's pipeline separator ignored
    ("M*F-AE", "MAFFAE"),              # alphabets may be mixed
    ("E", "E"),
])
def test_parse(given, canonical):
    assert parse(given) == canonical


def test_parse_unknown_symbol_names_it_and_the_alphabet():
    with pytest.raises(ValueError, match=re.escape(f"unknown block symbol 'X' in pattern 'MXA'; {UNKNOWN_MSG}")):
        parse("MXA")
    with pytest.raises(ValueError, match="unknown block symbol 'm'"):
        parse("mA")                     # lower case is not accepted
    with pytest.raises(ValueError, match="unknown block symbol '/'"):
        parse("M*/MM")                  # Megatron's MTP separator is not ours


@pytest.mark.parametrize("empty", ["", "   ", "|\n|"])
def test_parse_empty_pattern(empty):
    with pytest.raises(ValueError, match="empty layout pattern"):
        parse(empty)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="must be a string"):
        parse(["M", "A"])


def test_mamba2_is_a_symbol_everywhere():
    assert parse("MSM") == "MSM" and counts("S F S")["S"] == 2
    assert resolve({"pattern": "MFSF"}) == ("MFSF", "pattern")
    assert from_ratios(8, {"A": 0.125, "F": 0.5}, mamba="S") == "SFSFAFSF"
    assert resolve({"n_layers": 8, "ratios": {"A": 0.125, "F": 0.5}, "mamba": "S"}) == ("SFSFAFSF", "ratios")
    with pytest.raises(ValueError, match=r"unknown ratio key 'S'"):
        from_ratios(8, {"S": 0.5})  # Mamba takes the rest; mamba='S' says which
    with pytest.raises(ValueError, match=r"mamba='X': .* 'M' \(Mamba-1\) or 'S' \(Mamba-2\)"):
        from_ratios(8, {"A": 0.5}, mamba="X")


# Megatron-LM's M is a Mamba-2 layer: its patterns import with S; our Mamba-1 M has no Megatron symbol.
MAMBA2_HYBRID_8B = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"  # NVIDIA's 8B Mamba-2-Hybrid


def test_megatron_patterns_import_as_mamba2():
    assert from_megatron("M-M-*-M-") == "SFSFAFSF"
    assert from_megatron("ME*E | M-") == "SEAESF"
    ours = from_megatron(MAMBA2_HYBRID_8B)
    assert len(ours) == 56 and counts(ours) == {"M": 0, "A": 4, "F": 28, "E": 0, "S": 24}
    assert to_megatron(ours) == MAMBA2_HYBRID_8B                  # round trip, symbol for symbol
    assert resolve({"megatron": MAMBA2_HYBRID_8B}) == (ours, "megatron")
    # Megatron's ratio allocator with the 8B model's ratios gives the same stack
    assert from_ratios(56, {"A": 0.08, "F": 0.5}, mamba="S") == ours


def test_megatron_errors():
    with pytest.raises(ValueError, match=r"unknown Megatron symbol 'S' in pattern 'M-S'.*M \(Mamba-2\)"):
        from_megatron("M-S")  # our letters mean nothing to Megatron
    with pytest.raises(ValueError, match=r"unknown Megatron symbol 'A'"):
        from_megatron("MA")
    with pytest.raises(ValueError, match="empty Megatron pattern"):
        from_megatron(" | ")
    with pytest.raises(ValueError, match=r"Mamba-1 'M' blocks at positions \[0, 2\].*Megatron-LM's 'M' is a "
                                         r"Mamba-2 layer"):
        to_megatron("MFMAS")
    assert megatron_or_none("MFAF") is None and megatron_or_none("SFAF") == "M-*-"


# ------------------------------------------------------------------------------------- to_megatron, counts

@pytest.mark.parametrize("pattern, megatron", [
    ("SFSFAFSF", "M-M-*-M-"), ("SEAE", "ME*E"), ("A", "*"), ("SSSS", "MMMM"), ("AF", "*-")])
def test_to_megatron(pattern, megatron):
    assert to_megatron(pattern) == megatron
    assert from_megatron(to_megatron(pattern)) == pattern
    assert to_megatron(from_megatron(megatron)) == megatron


@pytest.mark.parametrize("pattern", ["SFSESFSEAFSESFSE", "AFAFAFAF", "S", "EEASF", "FSA"])
def test_round_trip(pattern):
    assert from_megatron(to_megatron(pattern)) == pattern
    assert parse(pattern) == pattern


def test_counts():
    assert counts("MFMFAFMF") == {"M": 3, "A": 1, "F": 4, "E": 0, "S": 0}
    assert counts("M*E-ES") == {"M": 1, "A": 1, "F": 1, "E": 2, "S": 1}


# --------------------------------------------------------------------------------------------- ratios

# Expected strings derived by hand by stepping Megatron-LM's allocator (allocate_layers / pattern_from_ratios,
# megatron/core/models/hybrid/hybrid_layer_allocation.py): a = round(n*A); a running budget starts at
# (n - a)/(a + 1), each Mamba slot passed costs 1, a slot becomes '*' when the budget is < 0.5 (refilled by the
# same step); then f = round(n*F) over the remaining Mamba slots with step (n - a - f)/f. E.g. (8, 0.125, 0.5):
# a=1, step 3.5 -> budget 3.5,2.5,1.5,0.5,-0.5 -> '*' at slot 4; f=4, step 0.75 over slots 0,1,2,3,5,6,7 ->
# '-' at 1,3,5,7 -> "M-M-*-M-". The two longest rows were stepped by running that function (commit d98e8a6);
# the 48-layer one is also the pattern listed in Megatron's own allocator examples.
MEGATRON = [
    (8, 0.125, 0.5, "M-M-*-M-"),
    (10, 0.3, 0.0, "MM*MM*M*MM"),
    (10, 0.3, 0.3, "M-*MM*-*M-"),
    (10, 0.25, 0.0, "MMM*MM*MMM"),   # 2.5 attention layers round half to even: 2
    (6, 0.25, 0.0, "M*MM*M"),        # 1.5 rounds half to even: 2
    (4, 0.0, 0.5, "M-M-"),           # MLP is right-justified: the last one takes the last slot
    (1, 1.0, 0.0, "*"),
    (3, 0.0, 0.0, "MMM"),
    (48, 0.25, 0.25, "MM-*MM-*MM*-MM*-MM*-MM*-M*M-M*M-M*M-M*M-*MM-*MM-"),
    (52, 0.08, 0.5, "M-M-M--M-M*-M-M-M--M*-M-M-M-M-M*--M-M-M-M*-M--M-M-M-"),
]


@pytest.mark.parametrize("n, attn, mlp, expected", MEGATRON, ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in MEGATRON])
def test_from_ratios_matches_megatron(n, attn, mlp, expected):
    assert to_megatron(from_ratios(n, {"A": attn, "F": mlp}, mamba="S")) == expected
    assert from_ratios(n, {"A": attn, "F": mlp}) == from_megatron(expected).replace("S", "M")


def test_moe_is_placed_like_mlp_after_it():
    # Hand-stepped: A as in "MMMMAMMM"; f=2 with step 2.5 -> F at slots 3, 7; e=2 with step (5-2)/2=1.5 over
    # the Mamba slots 0,1,2,5,6 -> E at 2 and 6.
    assert from_ratios(8, {"A": 0.125, "F": 0.25, "E": 0.25}) == "MMEFAMEF"
    # E alone behaves exactly like F alone.
    for n, frac in [(4, 0.5), (10, 0.3), (13, 0.2)]:
        assert from_ratios(n, {"E": frac}) == from_ratios(n, {"F": frac}).replace("F", "E")


@pytest.mark.parametrize("n", [1, 2, 5, 7, 12, 31])
def test_counts_follow_round_half_to_even_and_spreading_is_even(n):
    for a in range(n + 1):
        base = from_ratios(n, {"A": a / n})
        assert counts(base)["A"] == round(n * (a / n)) == a
        runs = [len(r) for r in base.split("A")]            # the a + 1 Mamba runs, ends included
        assert max(runs) - min(runs) <= 1, (base, runs)
        for f in range(1, n - a + 1):
            both = from_ratios(n, {"A": a / n, "F": f / n})
            assert counts(both) == {"M": n - a - f, "A": a, "F": f, "E": 0, "S": 0}
            assert both.replace("F", "M") == base              # MLP never moves attention
            rest = both.replace("A", "")                       # the non-attention slots, in order
            assert rest.endswith("F")                          # right-justified
            gaps = [len(r) for r in rest.split("F")[:-1]]      # Mamba before each MLP
            assert max(gaps) - min(gaps) <= 1, (both, gaps)


@pytest.mark.parametrize("n, frac, expected", [(10, 0.25, 2), (6, 0.25, 2), (10, 0.45, 4), (10, 0.35, 4),
                                               (8, 0.3, 2), (7, 0.5, 4)])
def test_rounding_rule_is_pythons_round(n, frac, expected):
    assert counts(from_ratios(n, {"A": frac}))["A"] == expected == round(n * frac)
    assert counts(from_ratios(n, {"F": frac}))["F"] == expected


def test_ratios_accept_none_and_float_slack():
    assert from_ratios(8, {"A": 0.125, "F": None}) == from_ratios(8, {"A": 0.125})
    assert counts(from_ratios(10, {"A": 0.1, "F": 0.2, "E": 0.7})) == {"M": 0, "A": 1, "F": 2, "E": 7, "S": 0}
    assert from_ratios(5, {}) == "MMMMM"


def test_ratio_errors():
    with pytest.raises(ValueError, match=r"ratio F=-0.1 is negative"):
        from_ratios(8, {"A": 0.25, "F": -0.1})
    with pytest.raises(ValueError, match=r"sum to 1.1 > 1"):
        from_ratios(8, {"A": 0.6, "F": 0.5})
    with pytest.raises(ValueError, match=r"unknown ratio key 'X'.*allowed: A, F, E "
                                         r"\(Mamba takes the rest: 'M', or 'S' with mamba='S'\)"):
        from_ratios(8, {"X": 0.5})
    with pytest.raises(ValueError, match=r"unknown ratio key 'M'"):
        from_ratios(8, {"M": 0.5})
    with pytest.raises(ValueError, match=r"unknown ratio key '\*'"):
        from_ratios(8, {"*": 0.5})
    with pytest.raises(ValueError, match=r"n_layers=0 must be at least 1"):
        from_ratios(0, {"A": 0.5})
    with pytest.raises(ValueError, match=r"n_layers=-3 must be at least 1"):
        from_ratios(-3, {})
    with pytest.raises(TypeError, match=r"n_layers must be an integer, got float 8.0"):
        from_ratios(8.0, {})
    with pytest.raises(TypeError, match=r"ratio A='0.5' must be a number"):
        from_ratios(8, {"A": "0.5"})
    # 0.5 + 0.5 of 3 layers rounds to 2 + 2 = 4 > 3 (Megatron would silently give fewer).
    with pytest.raises(ValueError, match=r"round to \{'A': 2, 'F': 2, 'E': 0\} = 4 layers, more than n_layers=3"):
        from_ratios(3, {"A": 0.5, "F": 0.5})


def test_fraction_rounding_to_zero_names_what_would_work():
    # 8 * 0.05 = 0.4 -> 0 layers. round(n * 0.05) >= 1 needs n * 0.05 > 0.5: n >= 11; for n = 8, A > 0.0625.
    with pytest.raises(ValueError, match=re.escape("ratio A=0.05 gives round(8 * 0.05) = 0 layers; "
                                                   "use n_layers >= 11 for this fraction, or A > 0.0625 "
                                                   "for n_layers=8")):
        from_ratios(8, {"A": 0.05})
    # 4 * 0.125 = 0.5 rounds (half to even) to 0: 5 layers is the smallest that works.
    with pytest.raises(ValueError, match=r"ratio E=0.125 .* n_layers >= 5 "):
        from_ratios(4, {"A": 0.5, "E": 0.125})
    assert counts(from_ratios(11, {"A": 0.05}))["A"] == 1
    assert counts(from_ratios(5, {"E": 0.125}))["E"] == 1


# ---------------------------------------------------------------------------------------------- jamba

def test_from_jamba_example():
    assert from_jamba(8, attn_layer_period=8, attn_layer_offset=4,
                      expert_layer_period=2, expert_layer_offset=1) == "MFMEMFMEAFMEMFME"
    assert from_jamba(3, 1, 0, 3, 2) == "AFAFAE"
    assert len(from_jamba(13, 4, 1, 3, 0)) == 26


@pytest.mark.parametrize("args, message", [
    ((8, 8, 8, 2, 1), r"attn_layer_offset=8 must satisfy 0 <= offset < attn_layer_period=8"),
    ((8, 8, 4, 2, 3), r"expert_layer_offset=3 must satisfy 0 <= offset < expert_layer_period=2"),
    ((8, 8, -1, 2, 1), r"attn_layer_offset=-1"),
    ((8, 0, 0, 2, 1), r"attn_layer_period=0 must be at least 1"),
    ((0, 8, 4, 2, 1), r"jamba n_layers=0 must be at least 1"),
])
def test_from_jamba_errors(args, message):
    with pytest.raises(ValueError, match=message):
        from_jamba(*args)


def test_from_jamba_matches_transformers():
    transformers = pytest.importorskip("transformers")
    for n, ap, ao, ep, eo in [(8, 8, 4, 2, 1), (32, 8, 4, 2, 1), (5, 2, 1, 3, 0), (7, 1, 0, 1, 0), (9, 4, 3, 5, 4)]:
        cfg = transformers.JambaConfig(num_hidden_layers=n, attn_layer_period=ap, attn_layer_offset=ao,
                                       expert_layer_period=ep, expert_layer_offset=eo, num_experts=4)
        expected = "".join(("A" if kind == "attention" else "M") + ("E" if n_exp > 1 else "F")
                           for kind, n_exp in zip(cfg.layers_block_type, cfg.layers_num_experts))
        assert from_jamba(n, ap, ao, ep, eo) == expected


# -------------------------------------------------------------------------------------------- resolve

JAMBA = {"n_layers": 2, "attn_layer_period": 2, "attn_layer_offset": 1,
         "expert_layer_period": 2, "expert_layer_offset": 0}
EMPTY = {"pattern": None, "n_layers": None, "ratios": None, "jamba": None}


def test_resolve_each_form():
    assert resolve({**EMPTY, "pattern": "M-M*"}) == ("MFMA", "pattern")
    assert resolve({**EMPTY, "jamba": JAMBA}) == ("MEAF", "jamba")
    assert resolve({**EMPTY, "megatron": "M-M*"}) == ("SFSA", "megatron")
    assert resolve({**EMPTY, "n_layers": 8, "ratios": {"A": 0.125, "F": 0.5}}) == ("MFMFAFMF", "ratios")
    assert resolve({"n_layers": 3, "ratios": {}}) == ("MMM", "ratios")      # absent keys count as unset


def test_resolve_precedence_logs_what_it_ignores(caplog):
    everything = {"pattern": "AF", "n_layers": 8, "ratios": {"A": 0.125}, "jamba": JAMBA}
    with caplog.at_level(logging.INFO, logger="hybrid.layout"):
        assert resolve(everything) == ("AF", "pattern")
    assert "using pattern; ignoring jamba, n_layers, ratios" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hybrid.layout"):
        assert resolve({**everything, "pattern": None}) == ("MEAF", "jamba")
    assert "using jamba; ignoring n_layers, ratios" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hybrid.layout"):
        resolve({**EMPTY, "pattern": "AF"})
    assert "ignoring" not in caplog.text


def test_resolve_dictconfig_command_line_pattern_wins():
    omegaconf = pytest.importorskip("omegaconf")
    node = omegaconf.OmegaConf.create({"layout": {**EMPTY, "n_layers": 8, "ratios": {"A": 0.125, "F": 0.5}}})
    omegaconf.OmegaConf.set_struct(node, True)
    assert resolve(node.layout) == ("MFMFAFMF", "ratios")
    node.merge_with_dotlist(["layout.pattern=MFMFAFMM"])                     # as a Hydra override would
    assert resolve(node.layout) == ("MFMFAFMM", "pattern")
    jamba_node = omegaconf.OmegaConf.create({**EMPTY, "jamba": JAMBA})
    assert resolve(jamba_node) == ("MEAF", "jamba")


def test_resolve_errors():
    with pytest.raises(ValueError, match=r"no layout given: set one of model.layout.pattern "
                                         r".*model.layout.megatron .*model.layout.jamba"
                                         r" .*model.layout.n_layers \+ model.layout.ratios"):
        resolve(EMPTY)
    with pytest.raises(ValueError, match=r"layout has n_layers=8 but no ratios"):
        resolve({**EMPTY, "n_layers": 8})
    with pytest.raises(ValueError, match=r"layout has ratios=\{'A': 0.5\} but no n_layers"):
        resolve({**EMPTY, "ratios": {"A": 0.5}})
    with pytest.raises(ValueError, match=r"unknown layout key\(s\) \['patern'\]"):
        resolve({"patern": "MF"})
    with pytest.raises(ValueError, match=r"missing keys \['expert_layer_offset'\]"):
        resolve({"jamba": {k: v for k, v in JAMBA.items() if k != "expert_layer_offset"}})
    with pytest.raises(ValueError, match=r"empty layout pattern"):
        resolve({"pattern": ""})                                              # set but empty: not skipped
    with pytest.raises(TypeError, match=r"a layout must be a mapping"):
        resolve("MFMF")
