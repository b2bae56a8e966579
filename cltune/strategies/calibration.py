"""The current experience's own training batches, for plugins that measure importance from data."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from cltune.data.encode import collate
from cltune.utils import derive_seed


def experience_batches(
    strategy, max_batches: int | None = None, purpose: str = "calibration"
) -> Iterator[dict]:
    """Up to ``max_batches`` training batches of ``strategy.experience`` (all of one epoch if None).

    Batches have the template's ``batch_size`` and are drawn in an order seeded from
    (seed, ``purpose``, experience index), so a run is reproducible and the order differs from
    the training order. Each batch is a ``model(**batch)`` dict on the strategy's device.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    seed = derive_seed(strategy.config.seed, purpose, strategy.experience.index)
    generator = torch.Generator().manual_seed(seed)
    for i, rows in enumerate(strategy._epoch_batches(strategy.experience.rows, generator)):
        if max_batches is not None and i >= max_batches:
            return
        yield strategy.to_device(collate(strategy.encode_rows(rows, True), strategy.encoder.pad_id))


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
