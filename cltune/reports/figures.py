"""Figures drawn from the accuracy matrices: heatmaps, per-task curves, the stability–plasticity plane.

Every function takes a :class:`~cltune.analysis.comparison.Comparison` and returns a matplotlib
``Figure``, or a ``str`` saying why the figure does not apply to these runs. Figures are built
with the object-oriented API (no pyplot), so drawing them changes no global state.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cltune.analysis.comparison import Comparison
from cltune.analysis.forgetting import forgetting_matrix
from cltune.analysis.stats import aggregate

FigureOrNote = Figure | str


def palette(labels: list[str]) -> dict[str, tuple]:
    """One colour per strategy label, the same in every figure."""
    return dict(zip(labels, sns.color_palette("tab10", max(len(labels), 1)), strict=False))


def grid(n: int, ncols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A figure with ``n`` panels in rows of ``ncols``; unused panels are hidden."""
    cols = min(n, ncols)
    rows = math.ceil(n / cols)
    figure = Figure(figsize=(cols * width, rows * height), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, axes[:n]


def _seeds_note(n: int) -> str:
    return f" (mean of {n} seeds)" if n > 1 else ""


def accuracy_heatmaps(comparison: Comparison) -> FigureOrNote:
    """The accuracy matrix of each strategy (stages × tasks, general tasks after the white line)."""
    labels = comparison.labels
    first = comparison.runs[0].matrix
    figure, axes = grid(len(labels), 3, 1.0 * len(first.columns) + 2.6, 0.5 * len(first.stages) + 1.6)
    for ax, label in zip(axes, labels, strict=True):
        matrix = comparison.mean_matrix(label)
        frame = pd.DataFrame(matrix.values, index=matrix.stages, columns=matrix.columns)
        sns.heatmap(
            frame,
            ax=ax,
            vmin=0,
            vmax=100,
            cmap="viridis",
            annot=True,
            fmt=".0f",
            cbar=False,
            mask=frame.isna(),
            linewidths=0.5,
        )
        if matrix.general:
            ax.axvline(matrix.n_tasks, color="white", linewidth=4)
        ax.set_title(label + _seeds_note(len(comparison.runs_of(label))))
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
    return figure


def _mean_forgetting(comparison: Comparison, label: str) -> np.ndarray | None:
    matrices = [
        forgetting_matrix(r.matrix)["chaudhry"] for r in comparison.runs_of(label) if r.matrix.is_sequential
    ]
    if not matrices:
        return None
    stacked = np.stack(matrices)
    counts = (~np.isnan(stacked)).sum(0)
    return np.where(counts > 0, np.nansum(stacked, 0) / np.maximum(counts, 1), np.nan)


def forgetting_heatmaps(comparison: Comparison) -> FigureOrNote:
    """Chaudhry forgetting of each task at each later stage (best score since learned − now)."""
    first = comparison.runs[0].matrix
    if first.n_tasks < 2:
        return "The stream has a single task, so nothing can be forgotten after it."
    values = {label: _mean_forgetting(comparison, label) for label in comparison.labels}
    shown = [label for label, v in values.items() if v is not None]
    if not shown:
        return "No run is sequential (e.g. joint training only), so forgetting per stage is undefined."
    limit = max(1.0, *(float(np.nanmax(np.abs(values[label]))) for label in shown))
    stages = comparison.runs_of(shown[0])[0].matrix.stages
    figure, axes = grid(len(shown), 3, 0.9 * first.n_tasks + 2.8, 0.5 * first.n_tasks + 1.6)
    for ax, label in zip(axes, shown, strict=True):
        frame = pd.DataFrame(values[label][2:, :-1], index=stages[2:], columns=first.tasks[:-1])
        sns.heatmap(
            frame,
            ax=ax,
            vmin=-limit,
            vmax=limit,
            center=0,
            cmap="RdBu_r",
            annot=True,
            fmt=".0f",
            cbar=ax is axes[-1],
            mask=frame.isna(),
            linewidths=0.5,
        )
        ax.set_title(label + _seeds_note(len(comparison.runs_of(label))))
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
    skipped = [label for label in comparison.labels if label not in shown]
    if skipped:
        figure.suptitle(f"not sequential, left out: {', '.join(skipped)}", fontsize=9)
    return figure


def _stage_positions(comparison: Comparison, label: str) -> list[int]:
    """x positions of a label's rows: 0..T when sequential, 0 and T for a joint run."""
    rows = len(comparison.runs_of(label)[0].matrix.values)
    n_tasks = comparison.runs[0].matrix.n_tasks
    return list(range(rows)) if rows == n_tasks + 1 else [0, n_tasks][:rows]


def task_curves(comparison: Comparison) -> FigureOrNote:
    """Each task's score across stages, one line per strategy (band: 95% CI over seeds)."""
    first = comparison.runs[0].matrix
    colours = palette(comparison.labels)
    figure, axes = grid(len(first.columns), 4, 3.6, 2.9)
    stage_ticks = ["0-shot", *[f"after {t}" for t in first.tasks]]
    for column, (ax, task) in enumerate(zip(axes, first.columns, strict=True)):
        for label in comparison.labels:
            runs = comparison.runs_of(label)
            x = _stage_positions(comparison, label)
            cells = [[r.matrix.values[row, column] for r in runs] for row in range(len(x))]
            cells = [[v for v in cell if not np.isnan(v)] for cell in cells]
            stats = [aggregate(cell) if cell else None for cell in cells]
            mean = [np.nan if s is None else s.mean for s in stats]
            style = "-" if len(x) == first.n_tasks + 1 else "--"
            ax.plot(x, mean, style, marker="o", color=colours[label], label=label)
            if len(runs) > 1:
                low = [np.nan if s is None else s.ci_low for s in stats]
                high = [np.nan if s is None else s.ci_high for s in stats]
                ax.fill_between(x, low, high, color=colours[label], alpha=0.2)
        if column < first.n_tasks:
            ax.axvline(column + 1, color="grey", linestyle=":", linewidth=1)
        ax.set_title(task if column < first.n_tasks else f"{task} (general)")
        ax.set_ylim(-3, 103)
        ax.set_xticks(range(len(stage_ticks)), stage_ticks, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("score")
    axes[0].legend(fontsize=8)
    return figure


def stability_plasticity(comparison: Comparison) -> FigureOrNote:
    """Each strategy's learning gain E against its retention (general change F, or BWT when the
    stream has no general tasks); error bars: 95% CI over seeds."""
    first = comparison.runs[0].matrix
    y_metric, y_name = (
        ("general_change", "retention: general change F") if first.general else ("bwt", "retention: BWT")
    )
    summary = comparison.summary().set_index(["label", "metric"])
    points = []
    for label in comparison.labels:
        x, y = summary.loc[(label, "specialization_gain")], summary.loc[(label, y_metric)]
        if x["n"] and y["n"]:
            points.append((label, x, y))
    if not points:
        return "No run defines both the learning gain E and the retention, e.g. only joint runs."
    colours = palette(comparison.labels)
    figure = Figure(figsize=(6.0, 4.6), layout="constrained")
    ax = figure.subplots()
    for label, x, y in points:
        ax.errorbar(
            x["mean"],
            y["mean"],
            xerr=[[x["mean"] - x["ci_low"]], [x["ci_high"] - x["mean"]]],
            yerr=[[y["mean"] - y["ci_low"]], [y["ci_high"] - y["mean"]]],
            fmt="o",
            markersize=8,
            capsize=4,
            color=colours[label],
            label=label,
        )
        ax.annotate(label, (x["mean"], y["mean"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.axhline(0, color="grey", linewidth=1)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_xlabel("plasticity: learning gain E (points)")
    ax.set_ylabel(f"stability — {y_name} (points)")
    ax.set_title("stability–plasticity plane (top right is best)")
    ax.legend(fontsize=8)
    skipped = [label for label in comparison.labels if label not in {p[0] for p in points}]
    if skipped:
        ax.text(0.01, 0.01, f"undefined, left out: {', '.join(skipped)}", transform=ax.transAxes, fontsize=8)
    return figure
