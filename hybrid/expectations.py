"""A recipe's published finding as machine-checkable expectations, checked against its figure table.

In a recipe (sweeps/*.yaml), at the top level or per profile (a profile's list replaces the recipe's):

    expect:
      - text: S6 copies at the training length          # optional; made from the fields when absent
        where: {model.blocks.M.selective: true, length: 128}   # cells of the figure table (raw values)
        metric: accuracy                                 # a metric label of the recipe; optional with one metric
        min: 0.9                                         # every matching cell's mean >= 0.9 (and/or max: ...)
      - where: {model.blocks.M.selective: false, length: {min: 1024}}   # a range: {min: a, max: b}
        below: {model.blocks.M.selective: true}          # compared with the cell that differs only in these
        margin: 0.05                                     # (above: ...) by at least this much (default 0)

Each expectation is PASS (every matching cell within its bounds), FAIL (one is not: the cells that missed are
named) or NOT CHECKED: on a smoke profile (`smoke: true`, the default for a profile named `quick`, whose runs
only check that the pipeline works), or when no completed run has a matching cell.
"""
from dataclasses import dataclass

import pandas as pd

EXPECT_KEYS = {"text", "where", "metric", "min", "max", "above", "below", "margin"}
PASS, FAIL, NOT_CHECKED = "PASS", "FAIL", "NOT CHECKED"


@dataclass
class Outcome:
    text: str
    status: str   # PASS | FAIL | NOT CHECKED
    detail: str   # the values seen, or why it was not checked

    def line(self) -> str:
        return f"{self.status:<11} {self.text}: {self.detail}"


def parse(items, where_from: str) -> list[dict]:
    """Check the `expect` list of a recipe or profile; errors name the file/profile, the item and what is allowed."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"{where_from}: `expect` must be a list of {{where, metric, min/max}}, got {items!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{where_from}: expect[{i}] must be a mapping, got {item!r}")
        unknown = set(item) - EXPECT_KEYS
        if unknown:
            raise ValueError(f"{where_from}: expect[{i}] has unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(EXPECT_KEYS)}")
        if not {"min", "max", "above", "below"} & set(item):
            raise ValueError(f"{where_from}: expect[{i}] needs a bound, `min` and/or `max`, or a comparison "
                             f"`above` / `below` {{column: value}}")
        if not isinstance(item.get("where", {}), dict):
            raise ValueError(f"{where_from}: expect[{i}].where must be {{column: value}}, got {item['where']!r}")
        out.append(item)
    return out


def describe(item: dict) -> str:
    """The expectation as a sentence: `accuracy >= 0.9 where selective=true, length=128`."""
    if item.get("text"):
        return str(item["text"])
    bounds = ([f">= {item['min']}"] if "min" in item else []) + ([f"<= {item['max']}"] if "max" in item else [])
    for side, word in (("above", ">"), ("below", "<")):
        if side in item:
            margin = f" + {item['margin']}" if word == ">" and item.get("margin") else (
                f" - {item['margin']}" if item.get("margin") else "")
            bounds.append(f"{word} its cell at {_where_text(item[side])}{margin}")
    where = _where_text(item.get("where") or {})
    return f"{item.get('metric', 'value')} {' and '.join(bounds)}" + (f" where {where}" if where else "")


def _where_text(where: dict) -> str:
    def one(v):
        if isinstance(v, dict):
            return " to ".join(_text(v.get(k, "")) for k in ("min", "max") if k in v) or "any"
        return _text(v)
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={one(v)}" for k, v in where.items())


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _matches(column: pd.Series, value) -> pd.Series:
    """Cells equal to a YAML value, compared as text so that True, "true", 64 and 64.0 meet; a {min, max}
    mapping is a numeric range."""
    if isinstance(value, dict):
        numbers = pd.to_numeric(column, errors="coerce")
        return (numbers >= value.get("min", float("-inf"))) & (numbers <= value.get("max", float("inf")))
    return column.map(_text).str.lower() == _text(value).lower()


def check(table: pd.DataFrame, items: list[dict], smoke: bool) -> list[Outcome]:
    """Each expectation against the figure table (one row per cell: its `mean` over seeds)."""
    outcomes = []
    for item in items:
        text = describe(item)
        if smoke:
            outcomes.append(Outcome(text, NOT_CHECKED, "smoke profile: it checks the pipeline, not the finding"))
            continue
        rows = table
        conditions = dict(item.get("where") or {})
        if "metric" in item:
            conditions["metric"] = item["metric"]
        compared_keys = [*(item.get("above") or {}), *(item.get("below") or {})]
        missing = [k for k in [*conditions, *compared_keys] if k not in rows.columns]
        if missing:
            outcomes.append(Outcome(text, NOT_CHECKED, f"the figure table has no column {missing}"))
            continue
        for key, value in conditions.items():
            rows = rows[_matches(rows[key], value)]
        rows = rows[rows["mean"].notna()] if len(rows) else rows
        if not len(rows):
            outcomes.append(Outcome(text, NOT_CHECKED, "no completed run has a matching cell"))
            continue
        low, high = item.get("min", float("-inf")), item.get("max", float("inf"))
        bad = rows[(rows["mean"] < low) | (rows["mean"] > high)]
        compared = _compare(table, rows, item)
        if compared is None:
            outcomes.append(Outcome(text, NOT_CHECKED, "no completed run has the cells to compare with"))
            continue
        # a comparison shows both sides, so that a PASS can be read too: "means: 1.32 vs 1.28"
        seen = "means: " + ", ".join(f"{v:.3g}" for v in rows["mean"]) + (
            " vs " + ", ".join(f"{theirs:.3g}" for _, theirs, _, _ in compared) if compared else "")
        failed = [f"at {at}: {ours:.3g} vs {theirs:.3g}" for ours, theirs, at, ok in compared if not ok]
        if len(bad) or failed:
            what = f"{len(bad)} of {len(rows)} cells outside ({seen})" if len(bad) else seen
            outcomes.append(Outcome(text, FAIL, "; ".join([what, *failed])))
        else:
            outcomes.append(Outcome(text, PASS, seen))
    return outcomes


def _compare(table: pd.DataFrame, rows: pd.DataFrame, item: dict) -> list[tuple] | None:
    """For `above` / `below`: each matching cell's (mean, its partner's mean, where, holds) against the cell that
    differs only in the given columns ([] when there is nothing to compare; None when a partner cell is missing)."""
    side = "above" if "above" in item else "below" if "below" in item else None
    if side is None:
        return []
    other, margin = item[side], float(item.get("margin", 0))
    keys = [c for c in table.columns if c not in ("mean", "min", "max", "n", "points", "not_completed")
            and not c.startswith("best ") and c not in other]
    pairs = []
    for _, row in rows.iterrows():
        partner = table
        for k in keys:
            partner = partner[partner[k].map(_text) == _text(row[k])]
        for k, v in other.items():
            partner = partner[_matches(partner[k], v)]
        if not len(partner) or partner["mean"].isna().all():
            return None
        theirs = float(partner["mean"].mean())
        ok = row["mean"] >= theirs + margin if side == "above" else row["mean"] <= theirs - margin
        at = ", ".join(f"{k.rsplit('.', 1)[-1]}={_text(row[k])}" for k in keys if k != "metric")
        pairs.append((float(row["mean"]), theirs, at, bool(ok)))
    return pairs


def markdown(outcomes: list[Outcome]) -> list[str]:
    """The expectations section of a figure's page."""
    if not outcomes:
        return []
    lines = ["## Expected finding", "", "| check | expectation | seen |", "|---|---|---|"]
    lines += [f"| **{o.status}** | {o.text} | {o.detail} |" for o in outcomes]
    return lines + [""]
