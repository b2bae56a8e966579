"""How much the parameters that tasks rely on overlap: Jaccard between the tasks' masks."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from torch import Tensor

from cltune.analysis.importance_map import ImportanceMap
from cltune.selective.masks import topk_masks
from cltune.selective.overlap import jaccard

Masks = Mapping[str, Tensor]


def mask_overlap(masks: Mapping[str, Masks]) -> pd.DataFrame:
    """Task × task table of ``|A ∩ B| / |A ∪ B|`` (Jaccard) between the tasks' masks.

    ``masks`` maps each task to its masks (parameter name → bool tensor, e.g. read by
    :func:`cltune.selective.load_masks`); every task's masks must name the same parameters with
    the same shapes. The diagonal is 1; two empty masks count as identical (1).
    """
    if len(masks) < 2:
        raise ValueError(f"mask overlap needs the masks of at least two tasks, got {len(masks)}")
    names = list(masks)
    table = pd.DataFrame(1.0, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            try:
                table.loc[a, b] = table.loc[b, a] = jaccard(masks[a], masks[b])
            except ValueError as err:
                raise ValueError(f"masks of {a!r} and {b!r} cannot be compared: {err}") from err
    return table


def importance_masks(maps: Mapping[str, ImportanceMap], ratio: float) -> dict[str, dict[str, Tensor]]:
    """Each task's top-``ratio`` entries per tensor (:func:`cltune.selective.topk_masks`): the
    parameters a mask-based method such as GMT would let that task update."""
    return {task: topk_masks(m.scores, ratio) for task, m in maps.items()}
