"""Accumulated-gradient magnitude (Gradient-Mask Tuning)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ._common import Batch, Params, Scores, batch_gradients, finish


def gradient(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    dtype: torch.dtype | None = None,
) -> Scores:
    """I = |Σ_b ∇θ L(θ; B_b)|: the magnitude of the task-loss gradient summed over the batches.

    Gradient-Mask Tuning (GMT; Li et al., AAAI 2025, "Enhancing Large Language Model
    Performance with Gradient-Based Parameter Selection", arXiv:2406.15330) accumulates the
    gradients over an interval and keeps the entries with the largest |Γ|. GMT averages
    (Γ = 1/N Σ ∇L); the sum differs by the factor N only, so every selection is the same.
    """
    total: dict[str, Tensor] = {}
    for grads in batch_gradients(model, params, batches):
        accumulate_(total, grads)
    return finish({name: g.abs() for name, g in total.items()}, dtype)


def accumulate_(total: dict[str, Tensor], grads: Mapping[str, Tensor | None], scale: float = 1.0) -> None:
    """Add ``scale · grads`` into the float32 running sum ``total`` in place (None counts as zero).

    During training, call it at ``after_backward`` with ``{n: p.grad for n, p in params}`` to
    keep the ΣG that GMT and SPIDER need (``scale`` = 1 / the loss scale under fp16).
    """
    for name, g in grads.items():
        if g is None:
            continue
        if name in total:
            total[name].add_(g.detach(), alpha=scale)
        else:
            total[name] = g.detach().float() * scale  # a new tensor (exact when scale is 1)
