"""A recipe's figure from the table of its run records: tables in, pictures (and their tables) out.

`figure_table(long, recipe)` turns the long table of hybrid.sweep.collect into one row per cell of the figure,
`draw` makes the png/pdf, `markdown` the page that shows it with the same numbers, every row listing the run
directories it was made from. Reading the sweep dir and writing the files: hybrid.reproduce (`make`), whose
`--figures-only` is `python -m hybrid.figures RECIPE [profile=quick|paper] [overrides]`.

A recipe's `metric` is a metric name, or a pattern over the names in result.json:
  `val/acc_L{task.train_length}`          {config key} becomes that run's value (accuracy at its own length)
  `val/acc_L(?P<length>\\d+)`              a regular expression; each named group becomes a column (numbers
                                          as numbers), usable as an axis: here accuracy at every length
  a list, or {label: pattern, ...}        several metrics; the column `metric` holds the label
Its `plot`:
  kind: line | bar         line: y against a numeric x; bar: grouped bars over categories of x
  x, hue, col, row         columns (config keys, group choices like `model`, pattern groups, `metric`)
  over: seed               averaged over (mean; error bars from min to max); default seed
  best_over: [lit.optimizer.lr]   first keep, per seed and cell, the best value over these keys (best: max|min)
  labels: {column: {value: label}}, logx (2 or 10), logy, ylim, xlabel, ylabel, legend (its title), title
"""
import re
import sys
from pathlib import Path

import pandas as pd

from hybrid.sweep import Plan, Recipe, collect

PLOT_KEYS = {"kind", "x", "y", "hue", "col", "row", "over", "best_over", "best", "labels", "logx", "logy", "ylim",
             "xlabel", "ylabel", "legend", "title"}
KINDS = ("line", "bar", "heatmap")
SMOKE = "SMOKE TEST: checks the pipeline, not the finding"
MARKERS = "osD^vPX*"


def metric_specs(metric) -> list[tuple[str, str]]:
    """The recipe's `metric` as [(label, pattern)]."""
    if isinstance(metric, str):
        return [(metric, metric)]
    if isinstance(metric, list):
        return [(m, m) for m in metric]
    if isinstance(metric, dict):
        return list(metric.items())
    raise ValueError(f"metric must be a name, a list or {{label: pattern}}, got {metric!r}")


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _text(value) -> str:
    """A config value as it appears in a metric name: 64, not 64.0 (a column with gaps holds floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def select_metrics(table: pd.DataFrame, metric) -> pd.DataFrame:
    """Rows of the long table whose metric matches a spec; `metric` becomes the spec's label and each named
    group of the pattern a column."""
    out = []
    for label, pattern in metric_specs(metric):
        keys = re.findall(r"\{([^{}]+)\}", pattern)
        missing = [k for k in keys if k not in table.columns]
        if missing:
            raise ValueError(f"metric {pattern!r} refers to {missing}, which no run has; columns include "
                             f"{sorted(c for c in table.columns if '.' in c)[:20]}")
        for _, row in table.iterrows():
            name = row["metric"]
            if not isinstance(name, str):
                continue
            regex = re.sub(r"\{([^{}]+)\}", lambda m, row=row: re.escape(_text(row[m.group(1)])), pattern)
            match = re.fullmatch(regex, name)
            if match:
                out.append({**row.to_dict(), **{k: _number(v) for k, v in match.groupdict().items()},
                            "metric": label, "metric_name": name})
    return pd.DataFrame(out)


def check_plot(plot: dict) -> dict:
    unknown = set(plot) - PLOT_KEYS
    if unknown:
        raise ValueError(f"unknown plot keys {sorted(unknown)}; allowed: {sorted(PLOT_KEYS)}")
    if plot.get("kind", "line") not in KINDS:
        raise ValueError(f"plot kind {plot.get('kind')!r}; allowed: {', '.join(KINDS)}")
    if "x" not in plot:
        raise ValueError("plot needs an `x` column")
    if plot.get("kind") == "heatmap" and ("y" not in plot or plot.get("hue")):
        raise ValueError("a heatmap plot needs a `y` column (x by y cells; one heatmap per col/row) and no hue")
    if plot.get("best", "max") not in ("max", "min"):
        raise ValueError(f"plot best={plot['best']!r}; allowed: max, min")
    return plot


def figure_table(long: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """One row per cell of the figure (row, col, hue, x, metric): mean, min, max over `over`, the number of
    runs, the runs that did not complete, the chosen best_over values and the run directories (points)."""
    plot = check_plot(recipe.plot)
    over = plot.get("over", "seed")
    keys = [plot[k] for k in ("row", "col", "hue", "y") if plot.get(k)] + [plot["x"]]
    keys = list(dict.fromkeys(["metric", *keys]))
    done = long[long.status == "completed"]
    data = select_metrics(done, recipe.metric) if len(done) else pd.DataFrame()
    missing = [k for k in keys + [over] + list(plot.get("best_over", [])) if len(data) and k not in data.columns]
    if missing:
        raise ValueError(f"plot of {recipe.name} uses columns {missing} that the runs do not have")
    if not len(data):
        return pd.DataFrame(columns=[*keys, "mean", "min", "max", "n", "not_completed", "points"])
    best_over = list(plot.get("best_over") or [])
    if best_over:  # per cell and seed, the run with the best value over e.g. the learning rates
        ascending = plot.get("best", "max") == "min"
        data = data.sort_values("value", ascending=ascending)
        data = data.groupby([*keys, over], dropna=False, sort=False).head(1)
    grouped = data.groupby(keys, dropna=False)
    table = grouped["value"].agg(["mean", "min", "max", "count"]).rename(columns={"count": "n"}).reset_index()
    table["points"] = grouped["point"].agg(lambda s: "; ".join(sorted(s))).values
    for key in best_over:
        table[f"best {key}"] = grouped[key].agg(lambda s: ", ".join(str(v) for v in sorted(set(s)))).values
    table["not_completed"] = [_not_completed(long, row, keys) for _, row in table.iterrows()]
    return table.sort_values(keys).reset_index(drop=True)


def _not_completed(long: pd.DataFrame, row, keys: list[str]) -> int:
    """Runs of this cell (same values of the keys that are config columns) that failed or did not finish."""
    bad = long[long.status != "completed"].drop_duplicates("point")
    for k in keys:
        if k in bad.columns and k != "metric":
            bad = bad[bad[k].astype(str) == str(row[k])]
    return len(bad)


def labelled(table: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """Values replaced by their display labels (recipe plot.labels: {column: {value: label}})."""
    out = table.copy()
    for column, mapping in (labels or {}).items():
        if column in out.columns:
            text = {str(k).lower() if isinstance(k, bool) else str(k): v for k, v in mapping.items()}
            out[column] = [text.get(str(v).lower() if isinstance(v, bool) else str(v), v) for v in out[column]]
    return out


def chance_of(chance, metric_label) -> float | None:
    """The chance level of a metric: the recipe's `chance` (a number, or {metric label: number})."""
    if isinstance(chance, dict):
        return chance.get(metric_label)
    return chance


def is_accuracy(label, plot: dict) -> bool:
    """Accuracy axes run from 0 to 1 (never auto-zoomed onto noise)."""
    text = f"{label} {plot.get('ylabel', '')}".lower()
    return "acc" in text


def draw(table: pd.DataFrame, recipe: Recipe, base: Path, smoke: bool = False, chance=None,
         outcomes: list = ()) -> list[Path]:
    """base.png and base.pdf of the figure table. A smoke profile says so in the title; the chance level is a
    dotted line; accuracy axes run 0-1; lines carry distinct markers and a small x offset so identical lines
    stay visible; the expectation checks (hybrid.expectations) are printed under the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = recipe.plot
    shown = labelled(table, plot.get("labels"))
    rows = list(dict.fromkeys(shown[plot["row"]])) if plot.get("row") else [None]
    cols = list(dict.fromkeys(shown[plot["col"]])) if plot.get("col") else [None]
    hue = plot.get("hue")
    heatmap = plot.get("kind") == "heatmap"
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.6 * len(cols) + 1.2, 2.9 * len(rows) + 0.6),
                             squeeze=False, sharey=plot.get("col") != "metric" and not heatmap,
                             sharex=plot.get("kind") == "bar")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            cell = shown
            if r is not None:
                cell = cell[cell[plot["row"]] == r]
            if c is not None:
                cell = cell[cell[plot["col"]] == c]
            label = cell["metric"].iloc[0] if len(cell) else None
            level = chance_of(chance, label)
            accuracy = is_accuracy(label, plot)
            if heatmap:
                _draw_heatmap(fig, ax, cell, plot, accuracy, level)
            else:
                _draw_cell(ax, cell, plot, hue)
                if level is not None:
                    ax.axhline(level, color="0.4", linestyle=":", linewidth=1, label="chance")
            title = " ".join(f"{plot[k]}={v}" if k != "col" or plot[k] != "metric" else str(v)
                             for k, v in (("row", r), ("col", c)) if v is not None)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(plot.get("xlabel", plot["x"]) if i == len(rows) - 1 else "")
            ylabel = plot.get("ylabel", "value")
            if plot.get("col") == "metric":
                ylabel = f"{c} ({plot['ylabel']})" if plot.get("ylabel") else str(c)
            ax.set_ylabel(ylabel if j == 0 or plot.get("col") == "metric" else "")
            if heatmap:
                continue
            if plot.get("ylim") and plot.get("col") != "metric":
                ax.set_ylim(*plot["ylim"])
            elif accuracy:
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.tight_layout()
    above = bool(handles) and len(names) <= 4  # a long legend goes to the right, clear of the panel titles
    if handles and (hue or chance is not None):
        fig.legend(handles, names, fontsize=8, frameon=False, title=plot.get("legend", hue) if hue else None,
                   title_fontsize=8, **(dict(loc="lower center", ncol=len(names), bbox_to_anchor=(0.5, 1.0))
                                        if above else dict(loc="center left", bbox_to_anchor=(1.0, 0.5))))
    title = plot.get("title", recipe.title)
    fig.suptitle(f"{SMOKE}\n{title}" if smoke else title, fontsize=10, color="firebrick" if smoke else "black",
                 y=1.0 + (0.1 if above else 0.0) + (0.05 if smoke else 0.0), va="bottom")
    if outcomes:
        text = "\n".join(o.line() for o in outcomes)
        fig.text(0.01, -0.01, text, ha="left", va="top", fontsize=7, family="monospace")
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _offsets(xs: pd.Series, g: int, n: int, log: bool) -> pd.Series:
    """x of line g of n, nudged by up to +-2% of the axis so that identical lines do not hide each other."""
    if n < 2 or not pd.api.types.is_numeric_dtype(xs) or not len(xs):
        return xs
    shift = (g - (n - 1) / 2) * 0.04 / (n - 1)
    if log:
        return xs * (2.0 ** (shift * 2))
    span = (xs.max() - xs.min()) or abs(xs.max()) or 1.0
    return xs + shift * span


def _draw_cell(ax, cell: pd.DataFrame, plot: dict, hue) -> None:
    x = plot["x"]
    groups = list(dict.fromkeys(cell[hue])) if hue else [None]
    if plot.get("kind", "line") == "bar":
        categories = list(dict.fromkeys(cell[x]))
        width = 0.8 / max(1, len(groups))
        for g, name in enumerate(groups):
            part = cell if name is None else cell[cell[hue] == name]
            pos = [categories.index(v) + (g - (len(groups) - 1) / 2) * width for v in part[x]]
            err = [part["mean"] - part["min"], part["max"] - part["mean"]]
            ax.bar(pos, part["mean"], width, yerr=err, capsize=2, label=None if name is None else str(name))
        ax.set_xticks(range(len(categories)), [str(c) for c in categories], fontsize=8)
        return
    for g, name in enumerate(groups):
        part = cell if name is None else cell[cell[hue] == name]
        part = part.sort_values(x)
        xs = _offsets(part[x], g, len(groups), bool(plot.get("logx")))
        ax.errorbar(xs, part["mean"], yerr=[part["mean"] - part["min"], part["max"] - part["mean"]],
                    marker=MARKERS[g % len(MARKERS)], markersize=5, markerfacecolor="none", capsize=2,
                    linestyle=("-", "--", "-.", ":")[g % 4], alpha=0.9, label=None if name is None else str(name))
    if plot.get("logx"):
        ax.set_xscale("log", base=2 if plot["logx"] == 2 else 10)
    if plot.get("logy"):
        ax.set_yscale("log")


def _draw_heatmap(fig, ax, cell: pd.DataFrame, plot: dict, accuracy: bool, chance) -> None:
    """One heatmap: plot.x across, plot.y down, each cell its mean written in it."""
    grid = cell.pivot_table(index=plot["y"], columns=plot["x"], values="mean", aggfunc="mean")
    low, high = (0.0, 1.0) if accuracy else (None, None)
    image = ax.imshow(grid.values, aspect="auto", origin="lower", cmap="viridis", vmin=low, vmax=high)
    ax.set_xticks(range(grid.shape[1]), [str(v) for v in grid.columns], fontsize=7)
    ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index], fontsize=7)
    for (yi, xi), value in pd.DataFrame(grid.values).stack().items():
        ax.text(xi, yi, f"{value:.2f}", ha="center", va="center", fontsize=6,
                color="white" if (accuracy and value < 0.5) else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if chance is not None:
        bar.ax.axhline(chance, color="red", linewidth=1)
        bar.set_label(f"chance {chance:.3g} (red)", fontsize=7)


def markdown(table: pd.DataFrame, recipe: Recipe, p: Plan, long: pd.DataFrame, image: str,
             outcomes: list = ()) -> str:
    """The figure's page: what it shows, the sweep, the expectation checks, the table (mean and range over seeds,
    and the runs). A smoke profile's page says in its title that it checks the pipeline, not the finding."""
    from hybrid import expectations
    status = long.drop_duplicates("point").status.value_counts().to_dict()
    lines = [f"# {SMOKE}: {recipe.title}" if p.smoke else f"# {recipe.title}", ""]
    if recipe.reference:
        lines += [f"Reference: {recipe.reference}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    lines += [f"![{recipe.name}]({image})", "",
              f"Profile `{p.profile}`; sweep dir `{p.sweep_dir}`; runs: "
              + (", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "none"), "",
              "Command: `python -m hybrid.reproduce " + " ".join([str(recipe.path), f"profile={p.profile}",
                                                                  *p.extra]) + "`", ""]
    if p.chance is not None:
        lines += [f"Chance level: {p.chance} (a dotted line in the figure; a red mark on a heatmap's colour bar)", ""]
    lines += expectations.markdown(list(outcomes))
    shown = labelled(table, recipe.plot.get("labels"))
    if len(shown):
        lines += ["Mean over " + recipe.plot.get("over", "seed") + " (min to max when there are several):", "",
                  collect.markdown_table(at_a_glance(shown, recipe.plot)), "", "Every cell and its runs:", ""]
    lines += [collect.markdown_table(shown), "",
              ("`points`: the run directories (under the sweep dir) of each row; `not_completed`: runs of that "
               "cell that failed or never finished (their reasons are in the sweep dir's summary.md)."), ""]
    return "\n".join(lines)


def at_a_glance(table: pd.DataFrame, plot: dict) -> pd.DataFrame:
    """The figure table pivoted for reading: one column per x value, cells "mean (min-max)"."""
    x = plot["x"]
    keys = [k for k in ("metric", plot.get("row"), plot.get("col"), plot.get("hue"), plot.get("y")) if k and k != x]
    keys = [k for k in dict.fromkeys(keys) if k != "metric" or table["metric"].nunique() > 1]
    def text(r):
        mean = format(r["mean"], ".3g")
        return mean if r["n"] < 2 else f"{mean} ({r['min']:.3g}-{r['max']:.3g})"
    cells = table.assign(cell=table.apply(text, axis=1), _=0)
    wide = cells.pivot_table(index=keys or ["_"], columns=x, values="cell", aggfunc="first", sort=False)
    named = x in (plot.get("labels") or {})  # labelled values say what they are
    wide.columns = [str(c) if named else f"{x}={c}" for c in wide.columns]
    return wide.reset_index().drop(columns=["_"], errors="ignore")


def main(argv: list[str] | None = None) -> int:
    """`python -m hybrid.figures ...`: hybrid.reproduce with --figures-only (no training)."""
    from hybrid.reproduce import main as reproduce
    return reproduce(["--figures-only", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
