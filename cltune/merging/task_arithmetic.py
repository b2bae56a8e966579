"""Task arithmetic (Ilharco et al., ICLR 2023, "Editing Models with Task Arithmetic")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from cltune.merging._common import stack_deltas, weight_column


def task_arithmetic_merge(deltas: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Weighted sum of task vectors: ``τ_m = Σ_t w_t τ_t``.

    The paper adds ``λ Σ_t τ_t`` to the base; ``weights`` carry ``λ`` (per task). ``None`` means
    ``w_t = 1``, the plain sum.
    """
    stacked = stack_deltas(deltas)
    return (stacked * weight_column(weights, stacked)).sum(dim=0)
