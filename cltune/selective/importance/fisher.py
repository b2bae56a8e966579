"""Diagonal empirical Fisher information (EWC)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ._common import Batch, Params, Scores, batch_gradients, finish


def fisher(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    dtype: torch.dtype | None = None,
) -> Scores:
    """F = 1/N Σ_b (∇θ L(θ; B_b))²: mean over the N batches of the squared batch gradient.

    The empirical-Fisher diagonal that weights the EWC penalty λ/2 Σ F (θ − θ*)²
    (Kirkpatrick et al., PNAS 2017, "Overcoming catastrophic forgetting in neural networks").
    With batches of one example this is the per-example empirical Fisher; with larger
    batches it is the usual mini-batch approximation.
    """
    total: dict[str, Tensor] = {}
    n = 0
    for grads in batch_gradients(model, params, batches):
        n += 1
        for name, g in grads.items():
            if name in total:
                total[name].addcmul_(g, g)
            else:
                total[name] = g * g
    return finish({name: s / n for name, s in total.items()}, dtype)
