"""Figure helpers: one house style for every chapter (seaborn on matplotlib).

Call :func:`use_house_style` once at the top of a notebook; every helper returns the ``Figure`` so the
notebook decides whether to save it (:func:`save`) as well as show it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..config import ensure_dir

PALETTE = "colorblind"
SEQUENTIAL = "rocket_r"
DIVERGING = "vlag"
# One colour per pruning score in every figure of the book (the order of importance.METHODS, then extras).
METHOD_ORDER = ("magnitude", "gradient", "taylor", "fisher", "movement", "skip loss", "l0", "random")


def hue_palette(values) -> dict | None:
    """Fixed colours for score names so a method looks the same in every chapter (``None``: seaborn's default)."""
    values = list(dict.fromkeys(values))
    if not all(v in METHOD_ORDER for v in values):
        return None
    colours = sns.color_palette(PALETTE, len(METHOD_ORDER))
    return {v: colours[METHOD_ORDER.index(v)] for v in values}


def use_house_style() -> None:
    """Seaborn ``whitegrid`` theme, colour-blind-safe palette, readable sizes, tight layouts."""
    sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE)
    matplotlib.rcParams.update({
        "figure.figsize": (7.0, 4.0), "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
        "axes.titleweight": "bold", "axes.titlesize": 12, "axes.spines.top": False,
        "axes.spines.right": False, "figure.constrained_layout.use": True,
    })


def save(fig, output_dir: str | Path | None, name: str) -> Path | None:
    """Also write the figure as ``output_dir/name.png`` and, for print and papers, as the vector graphic
    ``output_dir/name.svg`` (both skipped when ``output_dir`` is empty). Returns the PNG's path."""
    if not output_dir:
        return None

    path = ensure_dir(output_dir, "output_dir") / f"{name}.png"
    fig.savefig(path)
    with matplotlib.rc_context({"svg.hashsalt": name}):     # fixed element ids and no date: same figure, same bytes
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    return path


def component_bars(tables: dict[str, dict], title: str = "Where the parameters live"):
    """Horizontal bars of parameter share per component, one hue per model (``report.parameter_breakdown``)."""
    rows = [{"model": model, "component": comp, "share": c["params"] / t["total"]["params"],
             "parameters": c["params"]}
            for model, t in tables.items() for comp, c in t["components"].items()]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    sns.barplot(df, y="component", x="share", hue="model", ax=ax, orient="h")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel="share of all parameters", ylabel="", title=title)
    return fig


def weight_mapping(mapping, title: str = "Where MiniLM's tensors go in XLNet"):
    """Two columns of tensor names, BERT on the left and XLNet on the right, joined by a line coloured by how
    the tensor moved (``warmstart.MAPPING``: ``(bert name or None, xlnet name or None, how)``); a tensor with no
    partner sits alone on its side with its fate written in the middle."""
    kinds = list(dict.fromkeys(how for _, _, how in mapping))
    colours = dict(zip(kinds, sns.color_palette(PALETTE, len(kinds))))
    fig, ax = plt.subplots(figsize=(10.5, 0.42 * len(mapping) + 1.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(len(mapping) - 0.4, -1.2)
    ax.axis("off")
    ax.text(2.9, -0.9, "BERT (MiniLM)", ha="right", weight="bold")
    ax.text(7.1, -0.9, "XLNet", ha="left", weight="bold")
    box = dict(boxstyle="round,pad=0.25", fc="white", lw=1.2)
    for y, (src, dst, how) in enumerate(mapping):
        c = colours[how]
        if src:
            ax.text(2.9, y, src, ha="right", va="center", fontsize=9, family="monospace", bbox={**box, "ec": c})
        if dst:
            ax.text(7.1, y, dst, ha="left", va="center", fontsize=9, family="monospace", bbox={**box, "ec": c})
        if src and dst:
            ax.annotate("", xy=(7.0, y), xytext=(3.0, y), arrowprops=dict(arrowstyle="->", color=c, lw=1.6))
        ax.text(5.0, y - 0.12, how, ha="center", va="bottom" if src and dst else "center", fontsize=8, color=c,
                style="italic")
    ax.set_title(title)
    return fig


def mask_heatmaps(panels: dict[str, "object"], tokens: list[str], title: str | None = None):
    """Side-by-side 0/1 heatmaps (e.g. ``perm_mask`` and ``target_mapping``) over the same tokens."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 5.0), squeeze=False)
    for ax, (name, mat) in zip(axes[0], panels.items()):
        sns.heatmap(mat, ax=ax, cmap=SEQUENTIAL, vmin=0, vmax=1, cbar=False, square=True,
                    xticklabels=tokens, yticklabels=tokens, linewidths=0.2, linecolor="white")
        ax.set_title(name)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


def loss_curves(curves: dict[str, list[list[float]]], ylabel: str = "loss", title: str | None = None,
                hlines: dict[str, float] | None = None):
    """Line plot of ``[[step, value], ...]`` curves, optional labelled horizontal reference lines."""
    fig, ax = plt.subplots()
    for name, pts in curves.items():
        steps, vals = zip(*pts)
        ax.plot(steps, vals, label=name, lw=1.8)
    for i, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1.2, color=f"C{i + len(curves)}", label=name)
    ax.set(xlabel="optimizer step", ylabel=ylabel, title=title)
    ax.legend(frameon=False)
    return fig


def heatmap(matrix, title: str, xlabel: str = "", ylabel: str = "", xticklabels="auto", yticklabels="auto",
            fmt: str = ".2f", annot: bool = True, cmap: str = SEQUENTIAL, center=None, cbar_label: str = "",
            row_scaled: bool = False, binary: tuple[str, str] | None = None):
    """An annotated heatmap (score correlations, head importances, sensitivity grids).

    ``row_scaled``: rows measure different things (units): each row is coloured by its share of its own
    largest absolute value, and the annotations keep the raw numbers. ``binary``: a 0/1 matrix drawn with two
    colours and a legend-like colour bar labelled ``(label of 0, label of 1)``.
    """
    values = np.asarray(matrix, dtype=float)
    colour = values
    if row_scaled:
        scale = np.abs(values).max(axis=1, keepdims=True)
        colour = np.divide(values, scale, out=np.zeros_like(values), where=scale > 0)
        cbar_label = cbar_label or "share of the row's largest value"
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    kws = {"label": cbar_label} if cbar_label else {}
    if binary:
        cmap = matplotlib.colors.ListedColormap(sns.color_palette(PALETTE, 2)[::-1])
        kws = {"ticks": [0.25, 0.75]}
    sns.heatmap(colour, ax=ax, annot=values if annot else False, fmt=fmt, cmap=cmap, center=center,
                xticklabels=xticklabels, yticklabels=yticklabels, linewidths=0.5, linecolor="white",
                annot_kws={"size": 8}, cbar_kws=kws or None, vmin=0 if binary else None, vmax=1 if binary else None)
    if binary:
        ax.collections[0].colorbar.set_ticklabels(list(binary))
    ax.tick_params(axis="y", labelrotation=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return fig


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, where it cannot cover a curve or a reference line."""
    ax.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def hue_colours(order) -> dict:
    """Fixed colours for ``order`` (score names get the book's colours, anything else the palette in order):
    pass the same order to several figures so a series keeps its colour in each."""
    order = list(dict.fromkeys(order))
    return hue_palette(order) or dict(zip(order, sns.color_palette(PALETTE, len(order))))


def sparsity_curves(rows, y: str = "validation_accuracy", hue: str = "method", title: str | None = None,
                    x: str = "sparsity", xlabel: str = "sparsity of the prunable set (measured)",
                    hlines: dict[str, float] | None = None, ax=None, spread: bool = False,
                    hue_order=None, integer_x: bool = False):
    """Accuracy against measured sparsity, one line per ``hue`` value, with labelled reference lines.

    ``spread``: rows of several seeds; ``x`` is rounded to 0.1 point so that the seeds' measurements of one
    grid point meet, the line is their mean and the band their range (min to max). ``hue_order``: the series
    and their colours (:func:`hue_colours`), to keep a series' colour across figures that show a subset.
    ``integer_x``: ``x`` counts things (layers): integer ticks, no percent. Rows of one seed that carry the
    95% bootstrap interval of ``y`` (``validation_ci_low`` and ``validation_ci_high`` for ``validation_accuracy``,
    as the evaluator names them) get it drawn as a light band around each line, or as an error bar around a
    series of one point."""
    df = pd.DataFrame(rows)
    if spread:
        df[x] = df[x].round(3)
    order = list(hue_order) if hue_order is not None else list(dict.fromkeys(df[hue]))
    palette = hue_colours(order)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8.0, 4.0))
    sns.lineplot(df, x=x, y=y, hue=hue, style=hue, markers=True, dashes=False, ax=ax, lw=1.8,
                 hue_order=[h for h in order if h in set(df[hue])], palette=palette,
                 errorbar=("pi", 100) if spread else None)
    split = y.removesuffix("_accuracy")
    low, high = f"{split}_ci_low", f"{split}_ci_high"
    one_seed = "seed" not in df or df["seed"].nunique() <= 1       # per-seed intervals would zig-zag
    if not spread and one_seed and {low, high} <= set(df.columns):
        for name, part in df.dropna(subset=[low, high]).groupby(hue, sort=False):
            if name not in palette:                                 # seaborn drops a series not in hue_order
                continue
            part = part.sort_values(x)
            if len(part) == 1:          # a single point (one run) gets an error bar: a band needs two
                ax.errorbar(part[x], part[y], yerr=[part[y] - part[low], part[high] - part[y]],
                            color=palette[name], capsize=3, lw=1, fmt="none")
            else:
                ax.fill_between(part[x], part[low], part[high], color=palette[name], alpha=0.1, lw=0)
    for i, (name, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, ls="--", lw=1.1, color="0.4" if i == 0 else "0.7", label=name)
    if integer_x:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    else:
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel=xlabel, ylabel=y.replace("_", " "), title=title)
    _legend_outside(ax)
    return fig


def schedule_steps(rows, title: str | None = None):
    """Sparsity against optimizer step for several schedules (rows: ``schedule``, ``step``, ``sparsity``),
    drawn as steps: the masks hold their value until the next update."""
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots()
    colours = sns.color_palette(PALETTE, df["schedule"].nunique())
    for colour, (name, part) in zip(colours, df.groupby("schedule", sort=False)):
        part = part.sort_values("step")
        ax.step([0, *part["step"]], [0, *part["sparsity"]], where="post", lw=1.8, label=name, color=colour)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel="optimizer step", ylabel="sparsity of the prunable set", title=title)
    _legend_outside(ax)
    return fig


def distributions(samples: dict, xlabel: str, title: str, bins: int = 40):
    """Overlaid step histograms (density) of several samples, e.g. hard-concrete gates for several log_alpha."""
    df = pd.concat([pd.DataFrame({"value": list(map(float, v)), "sample": k}) for k, v in samples.items()])
    fig, ax = plt.subplots()
    sns.histplot(df, x="value", hue="sample", bins=bins, stat="probability", element="step", fill=False,
                 common_norm=False, ax=ax, lw=1.6)
    ax.set(xlabel=xlabel, ylabel="share of samples", title=title)
    return fig


def grouped_bars(rows, x: str, y: str, hue: str, title: str | None = None, ylabel: str | None = None,
                 hline: tuple[str, float] | None = None, fmt: str = "{:.2f}", log: bool = False):
    """Bars of ``y`` per ``x`` category, one colour per ``hue`` value, each bar labelled with its value."""
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots()
    sns.barplot(df, x=x, y=y, hue=hue, ax=ax, palette=hue_palette(df[hue]) or PALETTE)
    for container in ax.containers:
        ax.bar_label(container, labels=[fmt.format(v) for v in container.datavalues], fontsize=7, padding=2)
    if hline:
        ax.axhline(hline[1], ls="--", lw=1.1, color="0.4", label=hline[0])
    if log:
        ax.set_yscale("log")
    ax.set(xlabel=x.replace("_", " "), ylabel=ylabel or y.replace("_", " "), title=title)
    ax.legend(frameon=False, fontsize=8)
    return fig


def tradeoff(rows, x: str, y: str, hue: str = "method", title: str | None = None, xlabel: str | None = None,
             ylabel: str | None = None, hlines: dict[str, float] | None = None,
             interval: tuple[str, str] | None = None):
    """One point per model (e.g. accuracy against measured speedup), named in the legend beside the axes.

    ``interval``: the columns of each point's lower and upper bound on ``y`` (its 95% interval), drawn as error
    bars, so that the axis shows how far apart the points really are."""
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    palette = hue_colours(df[hue])
    if interval:
        low, high = interval
        for _, r in df.iterrows():
            ax.errorbar(r[x], r[y], yerr=[[r[y] - r[low]], [r[high] - r[y]]], fmt="none", lw=1.0,
                        ecolor=palette[r[hue]], alpha=0.7, capsize=3)
    sns.scatterplot(df, x=x, y=y, hue=hue, style=hue, s=70, ax=ax, palette=palette)
    for i, (name, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, ls="--", lw=1.1, color="0.4" if i == 0 else "0.7", label=name)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel=xlabel or x.replace("_", " "), ylabel=ylabel or y.replace("_", " "), title=title)
    _legend_outside(ax)
    return fig


def accuracy_intervals(rows, y: str = "model", value: str = "test_accuracy", low: str = "test_ci_low",
                       high: str = "test_ci_high", title: str | None = None, hue: str | None = None,
                       reference: dict[str, float] | None = None):
    """One horizontal bar per row with its 95% interval as an error bar (``stats.py``) and the value printed;
    ``reference`` draws labelled vertical lines (e.g. the majority class). Rows are dicts or a DataFrame."""
    df = pd.DataFrame(rows).reset_index(drop=True)
    colours = sns.color_palette(PALETTE, max(3, df[hue].nunique() if hue else len(df)))
    keys = list(dict.fromkeys(df[hue])) if hue else list(df.index)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(df) + 1.4))
    for i, r in df.iterrows():
        c = colours[keys.index(r[hue] if hue else i)]
        ax.barh(i, r[value], color=c, alpha=0.85)
        ax.errorbar(r[value], i, xerr=[[r[value] - r[low]], [r[high] - r[value]]], fmt="none", ecolor="0.2",
                    capsize=3, lw=1)
        ax.text(r[high] + 0.005, i, f"{r[value]:.1%}", va="center", fontsize=8)
    for j, (name, v) in enumerate((reference or {}).items()):
        ax.axvline(v, ls="--", lw=1.1, color="0.35" if j == 0 else "0.65", label=name)
    ax.set_yticks(range(len(df)), df[y])
    ax.invert_yaxis()
    lo = min(df[low].min(), *(reference or {0: 1}).values())
    ax.set_xlim(max(0.0, lo - 0.05), min(1.0, df[high].max() + 0.06))
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel=value.replace("_", " ") + " (95% interval)", ylabel="", title=title)
    if reference:
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig
