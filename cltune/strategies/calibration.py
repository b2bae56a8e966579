"""For plugins that measure importance on the current experience: scores from its calibration batches,
the scope's parameters, and their snapshot before training."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from cltune import distributed


def experience_importance(
    strategy,
    measure: Callable[..., dict[str, Tensor]],
    params: dict[str, nn.Parameter],
    max_batches: int | None,
    purpose: str,
    **options,
) -> dict[str, Tensor]:
    """``measure(model, params, batches, **options)`` on the experience's calibration batches
    (:meth:`~cltune.strategies.template.Template.calibration_batches`).

    Under several processes each scores its share of the batches (every n-th) and the scores are
    averaged over processes, weighted by their batch counts (accelerate's ``reduce``), so every
    process holds the same importance. For the measures that average over batches (Fisher, MAS)
    this equals the single-process measure; for GMT's |Σ_b ∇L| it is the mean of each process's
    |Σ ∇L| over its batches, which ranks entries alike but is not the same number.
    """
    batches = strategy.calibration_batches(max_batches, purpose, shard=distributed.active())
    if not distributed.active():
        return measure(strategy.model, params, batches, **options)
    total = math.ceil(len(strategy.experience.rows) / strategy.config.batch_size)
    total = total if max_batches is None else min(total, max_batches)
    mine = len(range(distributed.process_index(), total, distributed.num_processes()))
    if mine:
        scores = measure(strategy.model, params, batches, **options)
    else:  # fewer batches than processes: this one scores nothing and has weight 0
        dtype = options.get("dtype") or torch.float32
        scores = {name: torch.zeros_like(p, dtype=dtype) for name, p in params.items()}
    return distributed.weighted_mean(scores, mine)


def scope_params(strategy, method: str) -> dict[str, nn.Parameter]:
    """The strategy's trainable parameters; a clear error when the scope has none."""
    params = strategy.trainable_parameters()
    if not params:
        raise ValueError(
            f"{method}: the scope {strategy.config.scope!r} has no trainable parameters to score; "
            "choose a scope that holds the parameters being tuned (--set scope=language_model or all)"
        )
    return params


def snapshot(params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """Detached copies of ``params`` (same dtype and device): the weights before an experience."""
    return {name: p.detach().clone() for name, p in params.items()}
