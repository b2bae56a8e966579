"""Per-stage forgetting of every stream task, in the two conventions that CL tools use.

Notation (as in DESIGN.md): ``R[t, i]`` is the score of stream task ``i`` (numbered from 1)
after experience ``t`` (row 0 = zero-shot), i.e. ``matrix.values[t, i - 1]``.
"""

from __future__ import annotations

import numpy as np

from cltune.matrix import AccuracyMatrix


def _empty(matrix: AccuracyMatrix) -> np.ndarray:
    return np.full((len(matrix.values), matrix.n_tasks), np.nan)


def _best_before(scores: np.ndarray, first: int, stop: int) -> float:
    """Largest non-NaN value of ``scores[first:stop]``; NaN when there is none."""
    window = scores[first:stop]
    window = window[~np.isnan(window)]
    return float(window.max()) if window.size else float("nan")


def chaudhry_forgetting(matrix: AccuracyMatrix) -> np.ndarray:
    """Stages × stream tasks: ``f[t, i] = max_{l in [i, t-1]} R[l, i] - R[t, i]`` for ``t > i``.

    Chaudhry et al., "Riemannian Walk for Incremental Learning: Understanding Forgetting and
    Intransigence", ECCV 2018 (their f_j^k). The paper's maximum runs over every earlier
    stage; here it starts at stage ``i`` (the task's own experience), so that a zero-shot score
    from before the task was learned never counts as knowledge that was later lost.
    NaN cells are skipped inside the maximum; NaN wherever ``t <= i`` or nothing is defined.
    """
    out = _empty(matrix)
    if not matrix.is_sequential:
        return out
    scores = matrix.task_values
    for i in range(1, matrix.n_tasks + 1):
        for t in range(i + 1, matrix.n_tasks + 1):
            out[t, i - 1] = _best_before(scores[:, i - 1], i, t) - scores[t, i - 1]
    return out


def avalanche_forgetting(matrix: AccuracyMatrix) -> np.ndarray:
    """Stages × stream tasks: ``f[t, i] = R[i, i] - R[t, i]`` for ``t > i``, NaN elsewhere.

    The convention of Avalanche (``avalanche.evaluation.functional.forgetting`` and its
    ``ExperienceForgetting`` metric): the drop from the score right after the task's own
    experience. Averaged over ``i < T`` at ``t = T`` it equals ``-BWT`` (GEM).
    """
    out = _empty(matrix)
    if not matrix.is_sequential:
        return out
    scores = matrix.task_values
    for i in range(1, matrix.n_tasks + 1):
        out[i + 1 :, i - 1] = scores[i, i - 1] - scores[i + 1 :, i - 1]
    return out


def forgetting_matrix(matrix: AccuracyMatrix) -> dict[str, np.ndarray]:
    """Forgetting of each stream task at each stage, keyed ``"chaudhry"`` and ``"avalanche"``.

    Each array has shape ``(stages, stream tasks)``; entry ``[t, i - 1]`` is the forgetting of
    task ``i`` at stage ``t``, defined for ``t > i`` and NaN elsewhere (row 0 and the diagonal
    and above are all NaN). A matrix that is not sequential (e.g. a joint run: row 0 plus one
    final row) has no stage at which each task was learned, so both arrays are all NaN.
    """
    return {"chaudhry": chaudhry_forgetting(matrix), "avalanche": avalanche_forgetting(matrix)}
