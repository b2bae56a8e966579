"""Build the report of runs; write ``report.md`` (+ PNG figures) and a self-contained ``report.html``."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from matplotlib.figure import Figure
from tqdm.auto import tqdm

from cltune._version import __version__
from cltune.analysis.comparison import Comparison, compare_runs
from cltune.analysis.runs import Run
from cltune.reports import figures, param_figures
from cltune.reports.render import to_html, to_markdown
from cltune.reports.tables import Table, comparison_table, definitions, paired_table, runs_table
from cltune.utils import atomic_write_bytes, ensure_writable_dir

FORMATS = ("md", "html")
FIGURE_DIR = "figures"


@dataclass
class FigureSection:
    """One figure of the report, or the note saying why it was skipped."""

    name: str
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None


@dataclass
class Report:
    title: str
    overview: list[tuple[str, str]]
    comparison: Table
    definitions: list[tuple[str, str]]
    paired: Table | None
    paired_note: str
    figures: list[FigureSection]
    runs: Table


def _write(path: Path, data: bytes) -> None:
    """Write atomically, readable by everyone (a report is meant to be shared or served)."""
    atomic_write_bytes(path, data)
    path.chmod(0o644)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _figure_specs(mask_ratio: float) -> list[tuple[str, str, str, Callable[[Comparison], Figure | str]]]:
    return [
        (
            "accuracy",
            "Accuracy matrix per strategy",
            "Score (0–100) of every task (columns; general tasks after the white line) after every "
            "stage (rows; row 0 = zero-shot).",
            figures.accuracy_heatmaps,
        ),
        (
            "forgetting",
            "Forgetting matrix per strategy",
            "Chaudhry forgetting of each earlier task at each later stage: its best score since it was "
            "learned minus its score now (red = forgotten, blue = improved).",
            figures.forgetting_heatmaps,
        ),
        (
            "task_curves",
            "Accuracy of each task across stages",
            "One panel per task, one line per strategy (band: 95% CI over seeds); the dotted line marks the "
            "stage at which the task was trained; joint runs are dashed.",
            figures.task_curves,
        ),
        (
            "plane",
            "Stability–plasticity plane",
            "Mean learning gain E (task score right after its experience minus zero-shot) against retention "
            "(general change F, or BWT without general tasks).",
            figures.stability_plasticity,
        ),
        (
            "importance",
            "Importance map per layer × module type",
            "Mean per-entry importance of the trained model's parameters on each task's training rows, "
            "averaged over the tasks (first seed).",
            param_figures.importance_heatmaps,
        ),
        (
            "mask_overlap",
            "Mask overlap between tasks",
            "Jaccard overlap |A ∩ B| / |A ∪ B| between the tasks' masks: those a selective strategy saved, "
            f"else each task's top {mask_ratio:.0%} importance entries (first seed).",
            lambda c: param_figures.mask_overlap_heatmaps(c, mask_ratio),
        ),
        (
            "weight_drift",
            "Weight drift per layer",
            "Relative change ‖θ_trained − θ_base‖ / ‖θ_base‖ of each layer after the whole stream "
            "(LoRA merged), mean over seeds.",
            param_figures.weight_drift_bars,
        ),
        (
            "representation",
            "Representation drift per layer",
            "Linear CKA (Kornblith et al. 2019) between the hidden states of the base and the trained "
            "model on the general tasks' test rows; 1 = unchanged.",
            param_figures.representation_curves,
        ),
    ]


def build_report(comparison: Comparison, mask_ratio: float = 0.05, progress: bool = True) -> Report:
    """Every table and figure of the report (figures rendered to PNG bytes, with a progress bar
    unless ``progress`` is False)."""
    first = comparison.runs[0]
    seeds = sorted({r.seed for r in comparison.runs})
    overview = [
        (
            "stream",
            f"{first.stream} — tasks {', '.join(first.matrix.tasks)}; general "
            f"{', '.join(first.matrix.general) or 'none'}",
        ),
        ("strategies", ", ".join(comparison.labels)),
        ("models", ", ".join(sorted({r.model for r in comparison.runs}))),
        ("seeds", ", ".join(map(str, seeds))),
        ("runs", str(len(comparison.runs))),
        ("generated", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by cltune {__version__}"),
    ]
    sections = []
    specs = _figure_specs(mask_ratio)
    for name, title, caption, draw in tqdm(
        specs, desc="report figures", unit="figure", disable=not progress, leave=False
    ):
        result = draw(comparison)
        if isinstance(result, str):
            sections.append(FigureSection(name, title, caption, note=result))
        else:
            sections.append(FigureSection(name, title, caption, png=_png(result)))
    paired = paired_table(comparison)
    return Report(
        title=f"cltune report — stream {first.stream}",
        overview=overview,
        comparison=comparison_table(comparison),
        definitions=definitions(),
        paired=paired,
        paired_note=(
            "No two strategies share two or more seeds, so there is no paired test; run several seeds "
            "(`cltune run --seeds 0,1,2`) to tell a real difference from noise."
        ),
        figures=sections,
        runs=runs_table(comparison),
    )


def write_report(
    runs: Comparison | Sequence[Run | str | Path],
    out: str | Path,
    formats: Sequence[str] = FORMATS,
    mask_ratio: float = 0.05,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the report of ``runs`` into ``out``: ``report.md`` with ``figures/*.png`` beside it,
    ``report.html`` (self-contained), and ``metrics.csv`` (every metric of every run).

    Runs are checked as by :func:`cltune.analysis.compare_runs` (finished, one stream). Figures
    from an earlier report in ``out`` that no longer apply are removed. Returns the files written.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown report format {unknown[0] if unknown else ''!r}; choose from md, html")
    comparison = runs if isinstance(runs, Comparison) else compare_runs(runs)
    out = ensure_writable_dir(out, "the report folder", "choose a writable --out")  # before any work
    report = build_report(comparison, mask_ratio, progress)
    written: dict[str, Path] = {}
    if "md" in formats:
        folder = out / FIGURE_DIR
        folder.mkdir(exist_ok=True)
        for section in report.figures:
            path = folder / f"{section.name}.png"
            if section.png is None:
                path.unlink(missing_ok=True)
            else:
                _write(path, section.png)
        _write(out / "report.md", to_markdown(report, FIGURE_DIR).encode())
        written["md"] = out / "report.md"
    if "html" in formats:
        _write(out / "report.html", to_html(report).encode())
        written["html"] = out / "report.html"
    metrics = out / "metrics.csv"
    _write(metrics, comparison.per_run().to_csv().encode())
    written["metrics"] = metrics
    return written
