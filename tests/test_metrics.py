"""CL metrics and forgetting matrices against hand-written definitions and Avalanche."""

from __future__ import annotations

import math

import numpy as np
import pytest
from avalanche.evaluation.functional import forgetting as avalanche_functional_forgetting

from cltune.analysis import METRIC_DEFINITIONS, cl_metrics, forgetting_matrix
from cltune.matrix import AccuracyMatrix

SEQUENTIAL_ONLY = {
    "mft",
    "maa",
    "bwt",
    "fwt",
    "forgetting_chaudhry",
    "forgetting_avalanche",
    "specialization_gain",
    "overall",
    "harmonic",
}


def make(values, n_general: int = 0, stages: list[str] | None = None) -> AccuracyMatrix:
    values = np.asarray(values, dtype=float)
    n_tasks = values.shape[1] - n_general
    return AccuracyMatrix(
        values=values,
        tasks=[f"t{i}" for i in range(1, n_tasks + 1)],
        general=[f"g{g}" for g in range(1, n_general + 1)],
        stages=stages or [],
    )


def random_matrix(seed: int, n_tasks: int, n_general: int = 2) -> AccuracyMatrix:
    rng = np.random.default_rng(seed)
    return make(rng.uniform(0, 100, (n_tasks + 1, n_tasks + n_general)), n_general)


# Reference definitions written straight from the papers, with R[t][i] in 1-based task numbering.
def R(matrix: AccuracyMatrix, t: int, i: int) -> float:
    return float(matrix.values[t, i - 1])


def gem_bwt(m: AccuracyMatrix) -> float:
    T = m.n_tasks
    return sum(R(m, T, i) - R(m, i, i) for i in range(1, T)) / (T - 1)


def gem_fwt(m: AccuracyMatrix) -> float:
    T = m.n_tasks
    return sum(R(m, i - 1, i) - R(m, 0, i) for i in range(2, T + 1)) / (T - 1)


def chaudhry(m: AccuracyMatrix, t: int, i: int) -> float:
    return max(R(m, stage, i) for stage in range(i, t)) - R(m, t, i)


def chaudhry_average(m: AccuracyMatrix) -> float:
    T = m.n_tasks
    return sum(chaudhry(m, T, i) for i in range(1, T)) / (T - 1)


def maa_reference(m: AccuracyMatrix) -> float:
    T = m.n_tasks
    return sum(sum(R(m, t, i) for i in range(1, t + 1)) / t for t in range(1, T + 1)) / T


def assert_no_nan(metrics: dict[str, float | None]) -> None:
    for name, value in metrics.items():
        assert value is None or (isinstance(value, float) and math.isfinite(value)), name


HAND = make(
    [
        [10, 20, 30, 50],
        [80, 25, 35, 45],
        [60, 90, 40, 40],
        [50, 70, 95, 30],
    ],
    n_general=1,
)


def test_hand_computed_example():
    got = cl_metrics(HAND)
    expected = {
        "mft": (80 + 90 + 95) / 3,
        "mfn": (50 + 70 + 95) / 3,
        "maa": (80 + (60 + 90) / 2 + (50 + 70 + 95) / 3) / 3,
        "bwt": ((50 - 80) + (70 - 90)) / 2,
        "fwt": ((25 - 20) + (40 - 30)) / 2,
        "forgetting_chaudhry": ((80 - 50) + (90 - 70)) / 2,
        "forgetting_avalanche": ((80 - 50) + (90 - 70)) / 2,
        "general_retention": 100 * 30 / 50,
        "general_change": 30 - 50,
        "specialization_gain": ((80 - 10) + (90 - 20) + (95 - 30)) / 3,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    assert got["overall"] == pytest.approx(expected["specialization_gain"] - 20)
    target = expected["mft"]
    assert got["harmonic"] == pytest.approx(2 * target * 30 / (target + 30))


def test_definitions_cover_every_metric():
    assert set(METRIC_DEFINITIONS) == set(cl_metrics(HAND))
    assert all(METRIC_DEFINITIONS.values())


@pytest.mark.parametrize("seed", range(6))
def test_random_matrices_match_reference_definitions(seed: int):
    m = random_matrix(seed, n_tasks=2 + seed % 4)
    got = cl_metrics(m)
    assert got["bwt"] == pytest.approx(gem_bwt(m))
    assert got["fwt"] == pytest.approx(gem_fwt(m))
    assert got["forgetting_chaudhry"] == pytest.approx(chaudhry_average(m))
    assert got["forgetting_avalanche"] == pytest.approx(-gem_bwt(m))
    assert got["maa"] == pytest.approx(maa_reference(m))
    assert got["forgetting_chaudhry"] >= got["forgetting_avalanche"] - 1e-12
    assert_no_nan(got)


@pytest.mark.parametrize("seed", range(6))
def test_avalanche_convention_matches_avalanche_functional(seed: int):
    m = random_matrix(seed, n_tasks=2 + seed % 4)
    T = m.n_tasks
    # Avalanche's matrix has no zero-shot row: its row k is "after experience k" (0-based), and
    # its forgetting of experience k at time t is acc[k, k] - acc[t, k] (0 for t <= k).
    theirs = avalanche_functional_forgetting(m.values[1:, :T])
    ours = forgetting_matrix(m)["avalanche"]
    later = np.tril(np.ones((T, T), dtype=bool), k=-1)
    np.testing.assert_allclose(ours[1:][later], theirs[later])
    assert np.isnan(ours[1:][~later]).all() and np.isnan(ours[0]).all()
    # Avalanche's stream forgetting at the end averages over every experience but the last.
    assert cl_metrics(m)["forgetting_avalanche"] == pytest.approx(theirs[-1, :-1].mean())


@pytest.mark.parametrize("seed", range(4))
def test_chaudhry_matrix_matches_definition_at_every_stage(seed: int):
    m = random_matrix(seed, n_tasks=5)
    got = forgetting_matrix(m)["chaudhry"]
    for t in range(m.n_tasks + 1):
        for i in range(1, m.n_tasks + 1):
            if t > i:
                assert got[t, i - 1] == pytest.approx(chaudhry(m, t, i))
            else:
                assert np.isnan(got[t, i - 1])


def test_chaudhry_uses_peak_after_learning_not_zero_shot():
    # Task 1 keeps improving after its experience (60 -> 90), then drops to 40; its zero-shot
    # score (95) is higher still but was never "learned" knowledge.
    m = make([[95, 0, 0], [60, 10, 0], [90, 70, 5], [40, 70, 80]])
    forgetting = forgetting_matrix(m)
    assert forgetting["chaudhry"][3, 0] == pytest.approx(90 - 40)
    assert forgetting["avalanche"][3, 0] == pytest.approx(60 - 40)
    assert forgetting["avalanche"][2, 0] == pytest.approx(60 - 90)  # negative: improved
    # One stage after learning, the window [i, t-1] holds only R[i, i]: both conventions agree.
    assert forgetting["chaudhry"][2, 0] == pytest.approx(60 - 90)
    got = cl_metrics(m)
    assert got["forgetting_chaudhry"] == pytest.approx((50 + 0) / 2)
    assert got["forgetting_avalanche"] == pytest.approx((20 + 0) / 2)


def test_one_task_has_no_transfer_or_forgetting():
    m = make([[20, 50], [70, 45]], n_general=1)
    got = cl_metrics(m)
    for name in ("bwt", "fwt", "forgetting_chaudhry", "forgetting_avalanche"):
        assert got[name] is None, name
    assert got["mft"] == got["mfn"] == got["maa"] == 70
    assert got["specialization_gain"] == 50
    assert got["harmonic"] == pytest.approx(2 * 70 * 45 / 115)
    assert np.isnan(forgetting_matrix(m)["chaudhry"]).all()
    # Without general tasks the harmonic mean falls back to earlier tasks: none with T = 1.
    assert cl_metrics(make([[20], [70]]))["harmonic"] is None


def test_ties_and_constant_scores_give_zero_forgetting():
    m = make([[50, 50, 50], [50, 50, 50], [50, 50, 50], [50, 50, 50]])
    got = cl_metrics(m)
    assert got["bwt"] == got["forgetting_chaudhry"] == got["forgetting_avalanche"] == 0
    assert got["fwt"] == got["specialization_gain"] == 0
    tied_peak = make([[0, 0], [80, 0], [80, 60]])
    assert forgetting_matrix(tied_peak)["chaudhry"][2, 0] == 0


def test_task_never_learned():
    # Task 2 stays at 0: nothing to forget, no gain, and nothing divides by its score.
    m = make([[10, 0, 40], [60, 0, 40], [50, 0, 40]], n_general=1)
    got = cl_metrics(m)
    assert got["bwt"] == pytest.approx(50 - 60)
    assert got["fwt"] == pytest.approx(0.0)
    assert got["specialization_gain"] == pytest.approx((50 + 0) / 2)
    assert got["mft"] == pytest.approx(30.0)
    assert got["general_retention"] == pytest.approx(100.0)
    assert_no_nan(got)


def test_nan_cells_are_skipped_and_never_leak():
    values = HAND.values.copy()
    values[2, 0] = np.nan  # task 1 not evaluated after experience 2
    values[3, 1] = np.nan  # task 2 not evaluated at the end
    m = make(values, n_general=1)
    got = cl_metrics(m)
    assert_no_nan(got)
    assert got["bwt"] == pytest.approx(50 - 80)  # only task 1 is defined
    assert got["forgetting_chaudhry"] == pytest.approx(80 - 50)  # the NaN stage is skipped
    assert got["mfn"] == pytest.approx((50 + 95) / 2)
    assert got["maa"] == pytest.approx((80 + 90 + (50 + 95) / 2) / 3)
    forgetting = forgetting_matrix(m)
    assert np.isnan(forgetting["avalanche"][2, 0]) and np.isnan(forgetting["chaudhry"][3, 1])
    theirs = avalanche_functional_forgetting(values[1:, :3])
    later = np.tril(np.ones((3, 3), dtype=bool), k=-1)
    np.testing.assert_allclose(forgetting["avalanche"][1:][later], theirs[later])


def test_unevaluated_diagonal_cell():
    values = HAND.values.copy()
    values[1, 0] = np.nan  # task 1 never scored right after its own experience
    m = make(values, n_general=1)
    forgetting = forgetting_matrix(m)
    assert np.isnan(forgetting["avalanche"][2:, 0]).all()
    assert np.isnan(forgetting["chaudhry"][2, 0])
    assert forgetting["chaudhry"][3, 0] == pytest.approx(60 - 50)
    got = cl_metrics(m)
    assert got["mft"] == pytest.approx((90 + 95) / 2)
    assert got["forgetting_avalanche"] == pytest.approx(90 - 70)
    # Task 1 stays in Chaudhry's average (its peak after learning is R[2, 1]) but drops out of
    # Avalanche's, so here Chaudhry's forgetting is the smaller of the two.
    assert got["forgetting_chaudhry"] == pytest.approx(((60 - 50) + (90 - 70)) / 2)
    assert got["forgetting_chaudhry"] < got["forgetting_avalanche"]
    assert_no_nan(got)


def test_all_nan_final_row_gives_none():
    values = HAND.values.copy()
    values[-1] = np.nan
    got = cl_metrics(make(values, n_general=1))
    for name in ("mfn", "bwt", "forgetting_chaudhry", "general_change", "general_retention"):
        assert got[name] is None, name
    assert got["mft"] == pytest.approx((80 + 90) / 2)
    assert_no_nan(got)


def test_joint_run_gets_only_last_row_metrics():
    m = make([[10, 20, 30, 50], [60, 70, 80, 40]], n_general=1, stages=["zero-shot", "joint"])
    assert not m.is_sequential
    got = cl_metrics(m)
    assert got["mfn"] == pytest.approx(70.0)
    assert got["general_change"] == pytest.approx(-10.0)
    assert got["general_retention"] == pytest.approx(80.0)
    assert all(got[name] is None for name in SEQUENTIAL_ONLY)
    for array in forgetting_matrix(m).values():
        assert array.shape == (2, 3) and np.isnan(array).all()


def test_zero_shot_only_matrix_is_all_none():
    m = make([[10, 20, 50]], n_general=1, stages=["zero-shot"])
    assert all(value is None for value in cl_metrics(m).values())


def test_general_metrics_without_general_tasks():
    m = make(HAND.values[:, :3])
    got = cl_metrics(m)
    assert got["general_retention"] is None
    assert got["general_change"] is None
    assert got["overall"] is None
    target, earlier = (80 + 90 + 95) / 3, (50 + 70) / 2
    assert got["harmonic"] == pytest.approx(2 * target * earlier / (target + earlier))


def test_general_retention_zero_baseline_is_none():
    m = make([[10, 0, 40], [60, 5, 20]], n_general=2)
    got = cl_metrics(m)
    assert got["general_retention"] is None
    assert got["general_change"] == pytest.approx((5 - 20) / 2)


def test_general_retention_averages_per_task_ratios():
    m = make([[10, 20, 80], [60, 10, 80]], n_general=2)
    assert cl_metrics(m)["general_retention"] == pytest.approx((50 + 100) / 2)


def test_harmonic_is_zero_when_both_sides_are_zero():
    m = make([[0, 0], [0, 0]], n_general=1)
    assert cl_metrics(m)["harmonic"] == 0.0


PASTED = [  # stages × (3 stream tasks, 1 general task), as a paper would print it
    [10, 20, 30, 50],
    [80, 25, 35, 45],
    [60, 90, 40, 40],
    [50, 70, 95, 30],
]


@pytest.mark.parametrize("as_given", [lambda v: v, np.array, tuple], ids=["list", "numpy", "tuple"])
def test_a_plain_matrix_gets_the_definitions_metrics(as_given):
    got = cl_metrics(as_given(PASTED), n_tasks=3)
    R = np.array(PASTED, dtype=float)  # R[t, i - 1] in DESIGN.md's 1-based task numbering
    T = 3
    expected = {
        "mft": np.mean([R[i, i - 1] for i in range(1, T + 1)]),
        "mfn": np.mean(R[T, :T]),
        "maa": np.mean([np.mean(R[t, :t]) for t in range(1, T + 1)]),
        "bwt": np.mean([R[T, i - 1] - R[i, i - 1] for i in range(1, T)]),
        "fwt": np.mean([R[i - 1, i - 1] - R[0, i - 1] for i in range(2, T + 1)]),
        "forgetting_chaudhry": np.mean([max(R[i:T, i - 1]) - R[T, i - 1] for i in range(1, T)]),
        "forgetting_avalanche": np.mean([R[i, i - 1] - R[T, i - 1] for i in range(1, T)]),
        "specialization_gain": np.mean([R[i, i - 1] - R[0, i - 1] for i in range(1, T + 1)]),
        "general_change": R[T, 3] - R[0, 3],
        "general_retention": 100 * R[T, 3] / R[0, 3],
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    assert got == cl_metrics(AccuracyMatrix.from_values(PASTED, n_tasks=3), n_tasks=3)


def test_a_plain_matrix_without_n_tasks_has_no_general_tasks():
    got = cl_metrics(PASTED)
    assert got["general_change"] is None and got["mfn"] == pytest.approx(np.mean(PASTED[3]))
    assert got["fwt"] is None  # 4 columns of stream tasks but only 3 experiences: not sequential


def test_bad_plain_matrices_are_refused_clearly():
    with pytest.raises(TypeError, match=r"AccuracyMatrix, a list of rows or a 2-D numpy array, got dict"):
        cl_metrics({"values": PASTED})
    with pytest.raises(ValueError, match=r"integer from 0 to the matrix.s 4 columns, got 5"):
        cl_metrics(PASTED, n_tasks=5)
    with pytest.raises(ValueError, match=r"2-D \(stages × tasks\), got shape \(3,\)"):
        cl_metrics([1, 2, 3], n_tasks=1)
    with pytest.raises(ValueError, match="n_tasks=2 contradicts the AccuracyMatrix's 3 tasks"):
        cl_metrics(HAND, n_tasks=2)
