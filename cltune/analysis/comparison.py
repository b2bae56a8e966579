"""Tables across the runs of one stream: per run, per strategy (mean ± CI over seeds), paired tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from cltune.analysis.metrics import METRICS
from cltune.analysis.runs import Run, check_distinct, check_finished, check_same_stream, load_run
from cltune.analysis.stats import aggregate, paired_test
from cltune.matrix import AccuracyMatrix

LOWER_IS_BETTER = frozenset({"forgetting_chaudhry", "forgetting_avalanche"})


def better(metric: str, a: float, b: float) -> bool:
    """True when value ``a`` of ``metric`` is strictly better than ``b``."""
    return a < b if metric in LOWER_IS_BETTER else a > b


@dataclass
class Comparison:
    """Finished runs of one stream; a strategy's label groups its seeds."""

    runs: list[Run]
    confidence: float = 0.95

    @property
    def stream(self) -> str:
        return self.runs[0].stream

    @property
    def labels(self) -> list[str]:
        """Strategy labels in the order the runs were given."""
        return list(dict.fromkeys(run.label for run in self.runs))

    def runs_of(self, label: str) -> list[Run]:
        """The runs of ``label``, by seed (one per model when several models were run)."""
        return sorted((r for r in self.runs if r.label == label), key=lambda r: (r.seed, r.model))

    @property
    def several_seeds(self) -> bool:
        return any(len(self.runs_of(label)) > 1 for label in self.labels)

    def per_run(self) -> pd.DataFrame:
        """One row per run: label, strategy, model, seed and every metric (NaN if undefined)."""
        rows = [
            {"run": r.name, "label": r.label, "strategy": r.strategy, "model": r.model, "seed": r.seed}
            | {k: np.nan if v is None else v for k, v in r.metrics.items()}
            for r in self.runs
        ]
        return pd.DataFrame(rows).set_index("run")

    def summary(self) -> pd.DataFrame:
        """One row per (label, metric): ``mean``, ``ci_low``, ``ci_high`` (Student-t interval at
        ``confidence``, :func:`cltune.analysis.aggregate`) and ``n`` seeds where it is defined."""
        rows = []
        for label in self.labels:
            for metric in METRICS:
                values = [r.metrics[metric] for r in self.runs_of(label) if r.metrics[metric] is not None]
                if values:
                    stats = aggregate(values, self.confidence)
                    rows.append({"label": label, "metric": metric, **stats._asdict()})
                else:
                    rows.append(
                        {
                            "label": label,
                            "metric": metric,
                            "mean": np.nan,
                            "ci_low": np.nan,
                            "ci_high": np.nan,
                            "n": 0,
                        }
                    )
        return pd.DataFrame(rows)

    def table(self, stat: str = "mean") -> pd.DataFrame:
        """Label × metric table of ``stat`` (``mean``, ``ci_low``, ``ci_high`` or ``n``)."""
        table = self.summary().pivot(index="label", columns="metric", values=stat)
        return table.loc[self.labels, list(METRICS)]

    def best(self) -> dict[str, list[str]]:
        """For each metric, the labels with the best mean (all of them on a tie; none if undefined)."""
        means = self.table("mean")
        winners: dict[str, list[str]] = {}
        for metric in means.columns:
            column = means[metric].dropna()
            if column.empty:
                winners[metric] = []
                continue
            top = column.min() if metric in LOWER_IS_BETTER else column.max()
            winners[metric] = [label for label, value in column.items() if np.isclose(value, top)]
        return winners

    def paired(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Paired t-tests between every two labels on their shared seeds, per metric.

        Columns: ``metric``, ``a``, ``b``, ``n_pairs``, ``mean_difference`` (a − b) and ``p_value``
        (:func:`cltune.analysis.paired_test`; NaN with fewer than two pairs or identical
        differences). Seeds where either run leaves the metric undefined are skipped.
        """
        rows = []
        for metric in metrics or list(METRICS):
            for a, b in combinations(self.labels, 2):
                first = {(r.seed, r.model): r.metrics[metric] for r in self.runs_of(a)}
                second = {(r.seed, r.model): r.metrics[metric] for r in self.runs_of(b)}
                shared = [k for k in first if k in second and first[k] is not None and second[k] is not None]
                if not shared:
                    continue
                result = paired_test([first[k] for k in shared], [second[k] for k in shared])
                rows.append(
                    {
                        "metric": metric,
                        "a": a,
                        "b": b,
                        "n_pairs": len(shared),
                        "mean_difference": result.mean_difference,
                        "p_value": np.nan if result.p_value is None else result.p_value,
                    }
                )
        columns = ["metric", "a", "b", "n_pairs", "mean_difference", "p_value"]
        return pd.DataFrame(rows, columns=columns)

    def mean_matrix(self, label: str) -> AccuracyMatrix:
        """The accuracy matrix of ``label`` averaged over its seeds (NaN cells left out)."""
        runs = self.runs_of(label)
        stacked = np.stack([r.matrix.values for r in runs])
        counts = (~np.isnan(stacked)).sum(0)
        values = np.where(counts > 0, np.nansum(stacked, 0) / np.maximum(counts, 1), np.nan)
        first = runs[0].matrix
        return AccuracyMatrix(values, first.tasks, first.general, first.stages, first.metrics)


def compare_runs(runs: Sequence[Run | str | Path], confidence: float = 0.95) -> Comparison:
    """Load (if given as paths) and check runs for comparison: each finished, all on one stream
    recipe, no (strategy, hyper-parameters, model, seed) twice. Raises naming the run at fault."""
    if not runs:
        raise ValueError("no runs to compare; give at least one run directory")
    loaded = [run if isinstance(run, Run) else load_run(run) for run in runs]
    for run in loaded:
        check_finished(run)
    check_same_stream(loaded)
    check_distinct(loaded)
    return Comparison(loaded, confidence)
