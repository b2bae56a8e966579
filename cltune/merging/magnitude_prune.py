"""Magnitude pruning of each task vector before a weighted sum (the trim step of TIES, alone)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cltune.merging._common import check_density, stack_deltas, weight_column


def keep_top_magnitude(delta: Tensor, density: float) -> Tensor:
    """Zero all but the ``k = ⌊density · numel⌋`` entries of largest ``|δ|``."""
    check_density(density)
    flat = delta.reshape(-1)
    k = int(density * flat.numel())
    if k >= flat.numel():
        return delta
    keep = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    keep[flat.abs().topk(k).indices] = True
    return delta * keep.view_as(delta)


def magnitude_prune_merge(
    deltas: Sequence[Tensor], weights: Sequence[float] | None = None, *, density: float = 0.2
) -> Tensor:
    """``τ_m = Σ_t w_t · trim_k(τ_t)``, with ``trim_k`` keeping the top-``density`` magnitudes.

    The trim is step 1 of TIES (Yadav et al., NeurIPS 2023), whose default keeps 20 %; the sum is
    task arithmetic. ``None`` weights mean ``w_t = 1``.
    """
    stacked = stack_deltas([keep_top_magnitude(delta, density) for delta in deltas])
    return (stacked * weight_column(weights, stacked)).sum(dim=0)
