"""Figures drawn from a run's analyses (``<run>/analysis/``): importance, mask overlap, drift.

Each returns a ``Figure``, or a ``str`` that says which analysis is missing and how to make it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cltune.analysis.artefacts import (
    read_importance_maps,
    read_masks,
    read_representation_drift,
    read_weight_drift,
)
from cltune.analysis.comparison import Comparison
from cltune.analysis.drift import drift_by
from cltune.analysis.layout import natural_key
from cltune.analysis.overlap import importance_masks, mask_overlap
from cltune.reports.figures import FigureOrNote, grid, palette

HOW = "run `cltune analyze RUN_DIR...` (or `cltune run`, which analyses its runs) to compute it"


def _first_with(comparison: Comparison, label: str, read):
    """``read(run)`` of the first seed of ``label`` that has the analysis (None if none has)."""
    for run in comparison.runs_of(label):
        value = read(run)
        if value is not None and len(value):
            return value
    return None


def importance_heatmaps(comparison: Comparison) -> FigureOrNote:
    """Mean importance per entry, per layer × module type, averaged over the tasks (log10 scale,
    one colour scale for every strategy)."""
    tables, method = {}, ""
    for label in comparison.labels:
        maps = _first_with(comparison, label, read_importance_maps)
        if maps:
            per_task = [m.table("mean") for m in maps.values()]
            mean = sum(per_task) / len(per_task)
            tables[label] = np.log10(mean.where(mean > 0))
            method = next(iter(maps.values())).method
    if not tables:
        return f"No run has importance maps; {HOW}."
    values = np.concatenate([t.to_numpy().ravel() for t in tables.values()])
    values = values[~np.isnan(values)]
    if not values.size:
        return "Every importance in the maps is zero."
    some = next(iter(tables.values()))
    figure, axes = grid(len(tables), 2, 0.7 * len(some.columns) + 3.0, 0.35 * len(some.index) + 1.8)
    for ax, (label, logged) in zip(axes, tables.items(), strict=True):
        sns.heatmap(logged, ax=ax, cmap="magma", vmin=values.min(), vmax=values.max(),
                    annot=len(logged.index) <= 16, fmt=".1f", mask=logged.isna(),
                    cbar_kws={"label": f"log10 mean {method} importance"})  # fmt: skip
        ax.set_title(label)
        ax.set_xlabel("module type")
        ax.set_ylabel("layer")
        ax.tick_params(axis="x", labelrotation=45)
    return figure


def _run_masks(comparison: Comparison, label: str, ratio: float) -> tuple[dict, str] | None:
    for run in comparison.runs_of(label):
        masks = read_masks(run)
        if len(masks) >= 2:
            return masks, "saved masks"
    maps = _first_with(comparison, label, read_importance_maps)
    if maps and len(maps) >= 2:
        return importance_masks(maps, ratio), f"top {ratio:.0%} importance"
    return None


def mask_overlap_heatmaps(comparison: Comparison, ratio: float = 0.05) -> FigureOrNote:
    """Jaccard overlap between the tasks' masks: the masks a selective strategy saved, else each
    task's top-``ratio`` entries of its importance map."""
    found = {label: m for label in comparison.labels if (m := _run_masks(comparison, label, ratio))}
    if not found:
        return f"No run has masks or importance maps of two or more tasks; {HOW}."
    n_tasks = len(next(iter(found.values()))[0])
    figure, axes = grid(len(found), 3, 0.8 * n_tasks + 2.6, 0.7 * n_tasks + 1.4)
    for ax, (label, (masks, source)) in zip(axes, found.items(), strict=True):
        sns.heatmap(
            mask_overlap(masks), ax=ax, vmin=0, vmax=1, cmap="Blues", annot=True, fmt=".2f", cbar=False
        )
        ax.set_title(f"{label} ({source})")
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
    return figure


def weight_drift_bars(comparison: Comparison) -> FigureOrNote:
    """‖Δθ‖ / ‖θ‖ per layer group of the trained model against the base, mean over seeds."""
    per_label = {}
    for label in comparison.labels:
        frames = [
            drift_by(f, "layer") for r in comparison.runs_of(label) if (f := read_weight_drift(r)) is not None
        ]
        if frames:
            per_label[label] = pd.concat(frames).groupby("layer")["relative"].mean()
    if not per_label:
        return f"No run has its weight drift; {HOW}."
    table = pd.DataFrame(per_label)
    table = table.loc[sorted((i for i in table.index if (table.loc[i] > 0).any()), key=natural_key)]
    if table.empty:
        return "No parameter changed in any analysed run."
    colours = palette(comparison.labels)
    width = 0.8 / len(table.columns)
    figure = Figure(
        figsize=(max(6.0, 0.3 * len(table) * (1 + len(table.columns))), 4.2), layout="constrained"
    )
    ax = figure.subplots()
    positions = np.arange(len(table))
    for k, label in enumerate(table.columns):
        offset = (k - (len(table.columns) - 1) / 2) * width
        ax.bar(positions + offset, table[label].fillna(0), width, color=colours[label], label=label)
    ax.set_xticks(positions, table.index, rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.set_ylabel("‖Δθ‖ / ‖θ‖")
    ax.set_xlabel("layer (parameters outside layers: their parent module)")
    ax.set_title("weight drift per layer, trained model vs the base model")
    return figure


def representation_curves(comparison: Comparison) -> FigureOrNote:
    """Linear CKA between the base and the trained model's hidden states, per layer and task."""
    per_label = {}
    for label in comparison.labels:
        frames = [f for r in comparison.runs_of(label) if (f := read_representation_drift(r)) is not None]
        if frames:
            per_label[label] = pd.concat(frames).groupby(["task", "layer"])["cka"].mean()
    if not per_label:
        return f"No run has its representation drift; {HOW}."
    tasks = list(
        dict.fromkeys(t for series in per_label.values() for t in series.index.get_level_values("task"))
    )
    colours = palette(comparison.labels)
    figure, axes = grid(len(tasks), 3, 4.2, 3.2)
    for ax, task in zip(axes, tasks, strict=True):
        for label, series in per_label.items():
            if task in series.index.get_level_values("task"):
                curve = series.loc[task]
                ax.plot(curve.index, curve.values, marker="o", color=colours[label], label=label)
        ax.set_title(f"CKA on {task}")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("linear CKA with the base")
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    axes[0].legend(fontsize=8)
    return figure
