"""Continual-learning metrics computed from an :class:`~cltune.matrix.AccuracyMatrix`.

Notation: ``T`` stream tasks numbered from 1; ``R[t, i]`` is the score (0–100) of stream task
``i`` after experience ``t`` (row 0 = zero-shot), i.e. ``matrix.values[t, i - 1]``; ``R[t, g]``
is the score of general task ``g``. ``T`` in a row index means the final stage.

Conventions shared by every metric:

* A metric that is undefined returns ``None``, never NaN: BWT, FWT and the forgetting averages
  need ``T >= 2``; general-task metrics need general tasks.
* NaN cells (not evaluated) are left out of the averages; a metric whose every term is NaN is
  ``None``.
* A matrix that is not sequential (``matrix.is_sequential`` is False, e.g. a joint run with row
  0 and one final row) has no stage at which each task was learned. Only the metrics that
  compare the last row with row 0 are computed for it (``mfn``, ``general_change``,
  ``general_retention``); all others are ``None``. A matrix with a single row has no trained
  stage, so every metric is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cltune.analysis.forgetting import avalanche_forgetting, chaudhry_forgetting
from cltune.matrix import AccuracyMatrix

Metric = Callable[[AccuracyMatrix], float | None]


def _mean(terms: Iterable[float]) -> float | None:
    """Mean of the non-NaN terms; None when there are none."""
    values = np.asarray(list(terms), dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def _final_row(matrix: AccuracyMatrix) -> np.ndarray | None:
    """The last row, or None when the matrix has no trained stage."""
    return matrix.values[-1] if len(matrix.values) >= 2 else None


def _diagonal(matrix: AccuracyMatrix) -> np.ndarray | None:
    """``R[i, i]`` for ``i = 1..T``; None unless the matrix is sequential with ``T >= 1``."""
    if not matrix.is_sequential or matrix.n_tasks == 0:
        return None
    return np.diagonal(matrix.task_values[1:]).copy()


def _final_general(matrix: AccuracyMatrix) -> float | None:
    """Mean of the final row over the general tasks."""
    final = _final_row(matrix)
    if final is None or not matrix.general:
        return None
    return _mean(final[matrix.n_tasks :])


def _final_on_earlier(matrix: AccuracyMatrix) -> float | None:
    """Mean of ``R[T, i]`` over ``i < T`` (sequential matrices with ``T >= 2``)."""
    if not matrix.is_sequential or matrix.n_tasks < 2:
        return None
    return _mean(matrix.task_values[-1, :-1])


def mft(matrix: AccuracyMatrix) -> float | None:
    """Mean fine-tune accuracy: ``(1/T) Σ_i R[i, i]``, each task right after its experience.

    Named MFT by MCITlib (Guo et al. 2025, "MCITlib: Multimodal Continual Instruction Tuning
    Library and Benchmark"): how well each task was learned, before any forgetting.
    """
    diagonal = _diagonal(matrix)
    return None if diagonal is None else _mean(diagonal)


def mfn(matrix: AccuracyMatrix) -> float | None:
    """Mean final accuracy: ``(1/T) Σ_i R[T, i]``, the stream tasks in the last row.

    The GEM "ACC" (Lopez-Paz & Ranzato, NeurIPS 2017); MCITlib's MFN. Defined for any matrix
    with a trained row, so it also scores joint (non-sequential) runs.
    """
    final = _final_row(matrix)
    if final is None or matrix.n_tasks == 0:
        return None
    return _mean(final[: matrix.n_tasks])


def maa(matrix: AccuracyMatrix) -> float | None:
    """Mean average accuracy: ``(1/T) Σ_{t=1..T} (1/t) Σ_{i<=t} R[t, i]``.

    The average over stages of the accuracy on the tasks seen so far: iCaRL's average
    incremental accuracy (Rebuffi et al., CVPR 2017), named MAA by MCITlib (Guo et al. 2025).
    """
    if not matrix.is_sequential or matrix.n_tasks == 0:
        return None
    seen = (_mean(matrix.task_values[t, :t]) for t in range(1, matrix.n_tasks + 1))
    return _mean(np.nan if m is None else m for m in seen)


def bwt(matrix: AccuracyMatrix) -> float | None:
    """Backward transfer: ``(1/(T-1)) Σ_{i<T} (R[T, i] - R[i, i])``; negative means forgetting.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017.
    """
    forgetting = forgetting_avalanche(matrix)
    return None if forgetting is None else -forgetting


def fwt(matrix: AccuracyMatrix) -> float | None:
    """Forward transfer: ``(1/(T-1)) Σ_{i=2..T} (R[i-1, i] - R[0, i])``.

    Lopez-Paz & Ranzato, NeurIPS 2017, with the zero-shot row 0 as the reference ``b_i`` (GEM
    uses a randomly initialised model; for a pretrained MLLM the zero-shot model is the natural
    baseline). Positive means earlier experiences helped a task before it was trained on.
    """
    if not matrix.is_sequential or matrix.n_tasks < 2:
        return None
    scores = matrix.task_values
    return _mean(scores[i - 1, i - 1] - scores[0, i - 1] for i in range(2, matrix.n_tasks + 1))


def forgetting_chaudhry(matrix: AccuracyMatrix) -> float | None:
    """Average forgetting: ``(1/(T-1)) Σ_{i<T} (max_{l in [i, T-1]} R[l, i] - R[T, i])``.

    Chaudhry et al., "Riemannian Walk for Incremental Learning", ECCV 2018, with the maximum
    taken over the stages from the task's own experience on (see
    :func:`cltune.analysis.forgetting.chaudhry_forgetting`). ``>= forgetting_avalanche`` whenever
    every ``R[i, i]`` with ``i < T`` is scored (each term's maximum then includes ``R[i, i]``); a
    NaN ``R[i, i]`` drops task ``i`` from Avalanche's average but not from this one, so either
    may be the larger.
    """
    if not matrix.is_sequential or matrix.n_tasks < 2:
        return None
    return _mean(chaudhry_forgetting(matrix)[-1, :-1])


def forgetting_avalanche(matrix: AccuracyMatrix) -> float | None:
    """Average forgetting as Avalanche reports it: ``(1/(T-1)) Σ_{i<T} (R[i, i] - R[T, i])``.

    Equals ``-bwt`` (GEM). Avalanche: ``StreamForgetting`` / ``evaluation.functional.forgetting``.
    """
    if not matrix.is_sequential or matrix.n_tasks < 2:
        return None
    return _mean(avalanche_forgetting(matrix)[-1, :-1])


def general_retention(matrix: AccuracyMatrix) -> float | None:
    """Retained general knowledge, in percent: ``(1/G) Σ_g 100 · R[T, g] / R[0, g]``.

    100 means the general tasks kept their zero-shot score; above 100 they improved. The ratio
    is taken per task, then averaged, so every general task weighs the same whatever its
    scale. None when there are no general tasks, and None when any evaluated general task has
    a zero-shot score of 0 (its ratio is undefined, and dropping it would silently change which
    tasks the number averages). Joint runs use their last row as ``T``.
    """
    final = _final_row(matrix)
    if final is None or not matrix.general:
        return None
    before, after = matrix.values[0, matrix.n_tasks :], final[matrix.n_tasks :]
    evaluated = ~np.isnan(before) & ~np.isnan(after)
    if np.any(before[evaluated] == 0):
        return None
    return _mean(100.0 * after[evaluated] / before[evaluated])


def general_change(matrix: AccuracyMatrix) -> float | None:
    """Open-world stabilization F: ``(1/G) Σ_g (R[T, g] - R[0, g])``; negative means forgetting.

    Huang et al. 2025, "Keeping Yourself is Important in Downstream Tuning Multimodal Large
    Language Models" (their F, on held-out upstream tasks). Joint runs use their last row as T.
    """
    final = _final_row(matrix)
    if final is None or not matrix.general:
        return None
    return _mean(final[matrix.n_tasks :] - matrix.values[0, matrix.n_tasks :])


def specialization_gain(matrix: AccuracyMatrix) -> float | None:
    """Task-expert specialization E: ``(1/T) Σ_i (R[i, i] - R[0, i])``.

    Huang et al. 2025 (their E: tuned minus zero-shot score on the target task), measured for
    each stream task right after its own experience.
    """
    diagonal = _diagonal(matrix)
    if diagonal is None:
        return None
    return _mean(diagonal - matrix.task_values[0])


def overall(matrix: AccuracyMatrix) -> float | None:
    """The survey's overall score ``O = E + F`` (Huang et al. 2025); None if either is None."""
    gain, change = specialization_gain(matrix), general_change(matrix)
    return None if gain is None or change is None else gain + change


def harmonic(matrix: AccuracyMatrix) -> float | None:
    """Harmonic mean ``H = 2·A·B / (A + B)`` of target and retained performance.

    ``A`` is MFT (each task right after its experience). ``B`` is the final mean score on the
    general tasks; when the stream has no general tasks, ``B`` is the final mean score on the
    earlier stream tasks, ``(1/(T-1)) Σ_{i<T} R[T, i]`` (so ``T >= 2`` is then needed). It is the
    seen/unseen harmonic mean of generalized zero-shot learning (Xian et al., CVPR 2017)
    applied to the survey's specialization/stabilization trade-off (Huang et al. 2025): high
    only when both are high. ``H = 0`` when ``A + B = 0``.
    """
    target = mft(matrix)
    retained = _final_general(matrix) if matrix.general else _final_on_earlier(matrix)
    if target is None or retained is None:
        return None
    total = target + retained
    return 0.0 if total == 0 else 2.0 * target * retained / total


METRICS: dict[str, Metric] = {
    "mft": mft,
    "mfn": mfn,
    "maa": maa,
    "bwt": bwt,
    "fwt": fwt,
    "forgetting_chaudhry": forgetting_chaudhry,
    "forgetting_avalanche": forgetting_avalanche,
    "general_retention": general_retention,
    "general_change": general_change,
    "specialization_gain": specialization_gain,
    "overall": overall,
    "harmonic": harmonic,
}

METRIC_DEFINITIONS: dict[str, str] = {
    "mft": "MFT: mean score of each stream task right after its own experience (diagonal).",
    "mfn": "MFN: mean score over the stream tasks after the final experience (last row).",
    "maa": "MAA: mean over stages of the mean score on the tasks seen so far.",
    "bwt": "BWT (GEM): mean over earlier tasks of final minus just-learned score; <0 = forgetting.",
    "fwt": "FWT (GEM): mean over tasks i>1 of score before training on i minus zero-shot score.",
    "forgetting_chaudhry": (
        "Forgetting (Chaudhry 2018): mean over earlier tasks of best score since learned minus final score."
    ),
    "forgetting_avalanche": (
        "Forgetting (Avalanche): mean over earlier tasks of just-learned minus final score (-BWT)."
    ),
    "general_retention": "General retention: final / zero-shot score on general tasks, in %.",
    "general_change": "F (Huang 2025): mean final minus zero-shot score on general tasks.",
    "specialization_gain": "E (Huang 2025): mean just-learned minus zero-shot score per task.",
    "overall": "O = E + F (Huang 2025): specialization gain plus general change.",
    "harmonic": (
        "H: harmonic mean of MFT and final general score (final score on earlier tasks if "
        "there are no general tasks)."
    ),
}


def cl_metrics(
    matrix: AccuracyMatrix | Sequence[Sequence[float]] | np.ndarray, n_tasks: int | None = None
) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` for one matrix; undefined metrics are ``None``.

    ``matrix`` is an :class:`AccuracyMatrix`, or bare scores as a list of rows or a 2-D numpy array
    (row 0 zero-shot, row ``t`` after experience ``t``) whose first ``n_tasks`` columns are the
    stream tasks and the rest general tasks (default: every column is a stream task), e.g.
    ``cl_metrics([[10, 20, 50], [80, 25, 45], [60, 90, 40]], n_tasks=2)``.
    """
    if isinstance(matrix, AccuracyMatrix):
        if n_tasks is not None and n_tasks != matrix.n_tasks:
            raise ValueError(
                f"n_tasks={n_tasks} contradicts the AccuracyMatrix's {matrix.n_tasks} tasks; leave it out"
            )
    elif isinstance(matrix, np.ndarray | list | tuple):
        matrix = AccuracyMatrix.from_values(matrix, n_tasks)
    else:
        raise TypeError(
            f"cl_metrics takes an AccuracyMatrix, a list of rows or a 2-D numpy array, got "
            f"{type(matrix).__name__}; for a saved run use load_run(path).matrix"
        )
    return {name: metric(matrix) for name, metric in METRICS.items()}
