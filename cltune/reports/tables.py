"""The report's tables as plain cells, rendered later as Markdown, HTML or terminal text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cltune.analysis.comparison import LOWER_IS_BETTER, Comparison
from cltune.analysis.metrics import METRIC_DEFINITIONS, METRICS

METRIC_LABELS = {
    "mft": "MFT",
    "mfn": "MFN (final avg)",
    "maa": "MAA",
    "bwt": "BWT",
    "fwt": "FWT",
    "forgetting_chaudhry": "Forgetting (Chaudhry)",
    "forgetting_avalanche": "Forgetting (Avalanche)",
    "general_retention": "General retention %",
    "general_change": "F (general Δ)",
    "specialization_gain": "E (gain)",
    "overall": "O = E + F",
    "harmonic": "H",
}
PAIRED_METRICS = ("mfn", "bwt", "forgetting_chaudhry", "general_change", "overall")
SIGNIFICANCE = 0.05


@dataclass
class Cell:
    text: str
    best: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def metric_header(metric: str) -> str:
    """The metric's short name with the direction that is better (↑ or ↓)."""
    return f"{METRIC_LABELS.get(metric, metric)} {'↓' if metric in LOWER_IS_BETTER else '↑'}"


def _value(mean: float, low: float, high: float, n: int) -> str:
    if n == 0 or np.isnan(mean):
        return "—"
    return f"{mean:.1f} ± {(high - low) / 2:.1f}" if n > 1 else f"{mean:.1f}"


def comparison_table(comparison: Comparison, metrics: Sequence[str] | None = None) -> Table:
    """One row per strategy: its number of seeds and each metric, mean ± half-width of the 95% CI
    when there are several seeds; the best mean of each column is marked. Metrics that no run
    defines are left out (and listed in the table's notes)."""
    summary = comparison.summary().set_index(["label", "metric"])
    best = comparison.best()
    wanted = list(metrics or METRICS)
    shown = [m for m in wanted if best[m]]
    table = Table(["strategy", "seeds", *[metric_header(m) for m in shown]])
    for label in comparison.labels:
        seeds = sorted({r.seed for r in comparison.runs_of(label)})
        row = [Cell(label), Cell(",".join(map(str, seeds)))]
        for metric in shown:
            s = summary.loc[(label, metric)]
            row.append(Cell(_value(s["mean"], s["ci_low"], s["ci_high"], int(s["n"])), label in best[metric]))
        table.rows.append(row)
    undefined = [METRIC_LABELS.get(m, m) for m in wanted if not best[m]]
    if undefined:
        table.notes.append(f"Not defined for these runs: {', '.join(undefined)}.")
    if comparison.several_seeds:
        table.notes.append(
            f"Mean ± half-width of the {comparison.confidence:.0%} Student-t confidence interval over seeds."
        )
    return table


def definitions(metrics: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(short name, definition) of each metric, from METRIC_DEFINITIONS."""
    return [(METRIC_LABELS.get(m, m), METRIC_DEFINITIONS[m]) for m in (metrics or METRICS)]


def paired_table(comparison: Comparison, metrics: Sequence[str] = PAIRED_METRICS) -> Table | None:
    """Paired t-tests between strategies on their shared seeds; None when no pair shares two seeds."""
    tests = comparison.paired(metrics)
    tests = tests[tests["n_pairs"] >= 2]
    if tests.empty:
        return None
    table = Table(["metric", "A", "B", "seeds", "mean A − B", "p-value"])
    for row in tests.itertuples():
        significant = not np.isnan(row.p_value) and row.p_value < SIGNIFICANCE
        p_text = "—" if np.isnan(row.p_value) else f"{row.p_value:.3g}"
        table.rows.append(
            [
                Cell(METRIC_LABELS.get(row.metric, row.metric)),
                Cell(row.a),
                Cell(row.b),
                Cell(str(row.n_pairs)),
                Cell(f"{row.mean_difference:+.1f}"),
                Cell(p_text, significant),
            ]
        )
    table.notes.append(
        f"Two-sided paired t-test over the seeds both strategies ran (scipy.stats.ttest_rel); marked: "
        f"p < {SIGNIFICANCE}. '—': the differences are identical on every seed, so the test is undefined."
    )
    return table


def runs_table(comparison: Comparison) -> Table:
    """One row per run: directory, strategy, seed, model and training/evaluation time."""
    table = Table(["run", "strategy", "seed", "model", "train s", "eval s"])
    for run in comparison.runs:
        stages = run.results.get("timings", {}).get("stages", [])
        train = sum(s.get("train_s", 0.0) for s in stages)
        evaluation = sum(s.get("eval_s", 0.0) for s in stages)
        table.rows.append(
            [
                Cell(run.name),
                Cell(run.label),
                Cell(str(run.seed)),
                Cell(run.model),
                Cell(f"{train:.0f}"),
                Cell(f"{evaluation:.0f}"),
            ]
        )
    return table
