"""Magnitude pruning of each task vector before a weighted sum (the trim step of TIES, alone)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from cltune.merging._common import check_density, weight_vector


def magnitude_prune_merge(
    deltas: Sequence[Tensor], weights: Sequence[float] | None = None, *, density: float = 0.2
) -> Tensor:
    """``τ_m = Σ_t w_t · trim_k(τ_t)`` (PEFT's ``merge_utils.magnitude_prune``).

    ``trim_k`` keeps the ``k = ⌊density · numel⌋`` entries of largest ``|τ_t|`` of each parameter
    (``torch.topk``, so a tie at the threshold keeps exactly ``k``). The trim is step 1 of TIES
    (Yadav et al., NeurIPS 2023), whose default keeps 20 %; the sum is task arithmetic. ``None``
    weights mean ``w_t = 1``.
    """
    from peft.utils import merge_utils

    check_density(density)
    return merge_utils.magnitude_prune(list(deltas), weight_vector(weights, deltas), density)
