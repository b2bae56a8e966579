"""WiSE-FT (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from cltune.merging._common import stack_deltas, weight_column


def wise_ft_merge(
    deltas: Sequence[Tensor], weights: Sequence[float] | None = None, *, alpha: float = 0.5
) -> Tensor:
    """Weight-space ensembling ``θ = (1 − α) θ_base + α θ_ft``, on deltas ``τ_m = α · τ``.

    With several deltas ``τ = Σ_t w_t τ_t`` and ``None`` weights mean ``w_t = 1/T``: the
    interpolation towards the uniform soup of the fine-tuned models. ``α = 0.5`` is the
    paper's fixed default; ``α = 0`` keeps the base, ``α = 1`` the fine-tuned model.
    """
    stacked = stack_deltas(deltas)
    soup = (stacked * weight_column(weights, stacked, default=1.0 / stacked.shape[0])).sum(dim=0)
    return alpha * soup
