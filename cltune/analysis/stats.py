"""Aggregation of a metric across seeds: means, confidence intervals, paired comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats


class Summary(NamedTuple):
    """Mean of ``n`` values with a two-sided confidence interval ``[ci_low, ci_high]``."""

    mean: float
    ci_low: float
    ci_high: float
    n: int


class PairedResult(NamedTuple):
    """Mean of ``a - b`` over paired seeds and the two-sided paired t-test p-value."""

    mean_difference: float
    p_value: float | None


def _finite(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def aggregate(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean and Student-t confidence interval ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)``.

    ``s`` is the sample standard deviation (``ddof=1``). With one value there is no spread to
    estimate, so the interval collapses to the mean (``ci_low == ci_high == mean``); identical
    values also give a zero-width interval. Raises ``ValueError`` on empty or non-finite input
    (drop the ``None`` of an undefined metric before aggregating).
    """
    array = _finite(values, "values")
    mean = float(array.mean())
    if array.size == 1:
        return Summary(mean, mean, mean, 1)
    half_width = float(stats.t.ppf((1 + confidence) / 2, df=array.size - 1) * stats.sem(array, ddof=1))
    return Summary(mean, mean - half_width, mean + half_width, int(array.size))


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedResult:
    """Compare two strategies measured on the same seeds (``a[k]`` and ``b[k]`` share seed k).

    Returns the mean of ``a - b`` and the two-sided p-value of the paired t-test
    (``scipy.stats.ttest_rel``). The p-value is None with fewer than two pairs, and None when
    every difference is identical (the test statistic is undefined: zero variance).
    """
    first, second = _finite(a, "a"), _finite(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"paired samples differ in length: {first.size} vs {second.size}")
    differences = first - second
    mean_difference = float(differences.mean())
    if differences.size < 2 or np.all(differences == differences[0]):
        return PairedResult(mean_difference, None)
    return PairedResult(mean_difference, float(stats.ttest_rel(first, second).pvalue))
