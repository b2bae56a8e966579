"""TIES-merging (Yadav et al., NeurIPS 2023, "TIES-Merging: Resolving Interference When Merging
Models"): trim, elect sign, disjoint merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from cltune.merging._common import stack_deltas, weight_column
from cltune.merging.magnitude_prune import keep_top_magnitude

SignMethod = Literal["total", "frequency"]


def agreement_mask(stacked: Tensor, method: SignMethod = "total") -> Tensor:
    """Entries whose sign equals the elected sign ``γ = sgn(Σ_t τ_t)``.

    ``"total"`` elects by total mass (the paper); ``"frequency"`` by the count of signs,
    ``sgn(Σ_t sgn(τ_t))``. A tie elects ``+``. Zero entries never agree.
    """
    if method == "total":
        mass = stacked.sum(dim=0)
    elif method == "frequency":
        mass = stacked.sign().sum(dim=0)
    else:
        raise ValueError(f"unknown sign election method {method!r}; known: 'total', 'frequency'")
    elected = torch.where(mass >= 0, 1.0, -1.0).to(stacked.dtype)
    return stacked.sign() == elected


def disjoint_mean(weighted: Tensor, agree: Tensor) -> Tensor:
    """``τ_m^p = Σ_{t∈A^p} w_t τ_t^p / |A^p|``, ``A^p`` the tasks agreeing at entry ``p``.

    An entry where no task agrees merges to 0.
    """
    count = agree.sum(dim=0).clamp(min=1)
    return (weighted * agree).sum(dim=0) / count


def ties_merge(
    deltas: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    *,
    density: float = 0.2,
    majority_sign_method: SignMethod = "total",
) -> Tensor:
    """TIES: ``τ̂_t = trim_k(τ_t)``; ``γ = sgn(Σ_t τ̂_t)``; ``τ_m = mean_{t: sgn τ̂_t = γ} w_t τ̂_t``.

    ``density`` is the kept fraction ``k`` (paper default 20 %). Weights scale each trimmed
    vector inside the disjoint mean but do not vote in the sign election (PEFT's convention);
    ``None`` means ``w_t = 1``, the paper's merge before its global ``λ``.
    """
    trimmed = stack_deltas([keep_top_magnitude(delta, density) for delta in deltas])
    agree = agreement_mask(trimmed, majority_sign_method)
    return disjoint_mean(trimmed * weight_column(weights, trimmed), agree)
