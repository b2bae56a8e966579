"""Seed aggregation: Student-t intervals and paired tests checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cltune.analysis import aggregate, paired_test

T_975_DF4 = 2.7764451051977987  # Student-t 0.975 quantile, 4 degrees of freedom (tables: 2.776)


def test_interval_from_t_quantile():
    # mean 3, sample sd sqrt(2.5), standard error sqrt(2.5 / 5) = sqrt(0.5)
    summary = aggregate([1, 2, 3, 4, 5])
    half = T_975_DF4 * math.sqrt(0.5)
    assert summary.n == 5
    assert summary.mean == pytest.approx(3.0)
    assert summary.ci_low == pytest.approx(3 - half)
    assert summary.ci_high == pytest.approx(3 + half)


def test_two_values_use_cauchy_quantile():
    # With 1 degree of freedom the t distribution is Cauchy: quantile tan(pi * (p - 1/2)).
    summary = aggregate([1.0, 3.0])
    half = math.tan(math.pi * 0.475) * 1.0  # standard error sqrt(2) / sqrt(2) = 1
    assert (summary.ci_low, summary.ci_high) == pytest.approx((2 - half, 2 + half))


def test_lower_confidence_gives_narrower_interval():
    wide, narrow = aggregate([1, 2, 3, 4, 5]), aggregate([1, 2, 3, 4, 5], confidence=0.9)
    assert narrow.ci_low > wide.ci_low and narrow.ci_high < wide.ci_high


def test_single_value_interval_is_the_mean():
    assert tuple(aggregate([42.0])) == (42.0, 42.0, 42.0, 1)


def test_identical_values_have_zero_width():
    summary = aggregate([7.0, 7.0, 7.0])
    assert summary.ci_low == summary.ci_high == 7.0


def test_interval_covers_true_mean_95_percent_of_the_time():
    # A normal-quantile interval would cover only about 88% with n = 5.
    rng = np.random.default_rng(0)
    samples = rng.normal(10.0, 3.0, size=(2000, 5))
    covered = [s.ci_low <= 10.0 <= s.ci_high for s in map(aggregate, samples)]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.02)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_aggregate_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        aggregate(bad)


def test_paired_test_by_hand():
    # differences 1, 0, 2, -1: mean 0.5, sd sqrt(5/3), t = 0.5 / (sd / 2), 3 degrees of freedom
    result = paired_test([1, 2, 3, 4], [0, 2, 1, 5])
    t = 0.5 / (math.sqrt(5 / 3) / 2)
    # closed-form CDF of Student-t with 3 degrees of freedom
    x = t / math.sqrt(3)
    cdf = 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi
    assert result.mean_difference == pytest.approx(0.5)
    assert result.p_value == pytest.approx(2 * (1 - cdf))


def test_pairing_removes_between_seed_variance():
    # Seeds differ a lot, but b is consistently about 1 point below a on every seed.
    base = np.array([20.0, 50.0, 80.0, 35.0, 65.0])
    a, b = base + 1.0 + np.array([0.1, -0.1, 0.05, 0.0, -0.05]), base
    result = paired_test(a, b)
    assert result.mean_difference == pytest.approx(1.0)
    assert result.p_value < 1e-4
    assert paired_test(b, a).mean_difference == pytest.approx(-1.0)


def test_paired_test_undefined_cases():
    assert paired_test([3.0], [1.0]) == (2.0, None)
    assert paired_test([3.0, 4.0], [1.0, 2.0]) == (2.0, None)  # zero-variance differences
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])
