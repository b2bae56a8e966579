"""Task arithmetic (Ilharco et al., ICLR 2023, "Editing Models with Task Arithmetic")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from cltune.merging._common import weight_vector


def task_arithmetic_merge(deltas: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Weighted sum of task vectors: ``τ_m = Σ_t w_t τ_t`` (PEFT's ``merge_utils.task_arithmetic``).

    The paper adds ``λ Σ_t τ_t`` to the base; ``weights`` carry ``λ`` (per task). ``None`` means
    ``w_t = 1``, the plain sum.
    """
    from peft.utils import merge_utils  # peft (and transformers behind it) loads on first merge

    return merge_utils.task_arithmetic(list(deltas), weight_vector(weights, deltas))
