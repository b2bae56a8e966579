"""TIES-merging (Yadav et al., NeurIPS 2023, "TIES-Merging: Resolving Interference When Merging
Models"): trim, elect sign, disjoint merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from cltune.merging._common import check_density, weight_vector

SignMethod = Literal["total", "frequency"]
SIGN_METHODS = ("total", "frequency")


def check_sign_method(method: str) -> None:
    """Refuse a sign election other than ``"total"`` (by mass, the paper) or ``"frequency"``."""
    if method not in SIGN_METHODS:
        raise ValueError(f"unknown sign election method {method!r}; known: 'total', 'frequency'")


def ties_merge(
    deltas: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    *,
    density: float = 0.2,
    majority_sign_method: SignMethod = "total",
) -> Tensor:
    """TIES: ``τ̂_t = trim_k(τ_t)``; ``γ = sgn(Σ_t τ̂_t)``; ``τ_m = mean_{t: sgn τ̂_t = γ} w_t τ̂_t``
    (PEFT's ``merge_utils.ties``).

    ``density`` is the kept fraction ``k`` of each parameter (paper default 20 %), trimmed as in
    :func:`~cltune.merging.magnitude_prune.magnitude_prune_merge`. ``"total"`` elects the sign
    by mass (the paper), ``"frequency"`` by the count of signs; a tie elects ``+`` and a zero
    entry never agrees. Weights scale each trimmed vector inside the disjoint mean but do not vote
    in the sign election (PEFT's convention); ``None`` means ``w_t = 1``, the paper's merge
    before its global ``λ``.

    The trim works on each parameter alone, as PEFT and MergeKit do. The authors' code
    (prateeky2806/ties-merging, ``src/utils/merge_utils.py``) trims the whole model's flattened
    task vector at once, keeps ``⌊d·k⌋ + 1`` entries and every tie at the threshold (``kthvalue``
    and ``>=``), and gives an entry whose elected sign is 0 the sign elected most often.
    """
    from peft.utils import merge_utils

    check_density(density)
    check_sign_method(majority_sign_method)
    return merge_utils.ties(list(deltas), weight_vector(weights, deltas), density, majority_sign_method)
