"""Shared checks and shapes for the merge methods (one parameter's deltas at a time)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def stack_deltas(deltas: Sequence[Tensor]) -> Tensor:
    """Stack one parameter's task vectors on a new dim 0, refusing an empty list or mixed shapes."""
    if len(deltas) == 0:
        raise ValueError("merging needs at least one delta")
    shapes = {tuple(delta.shape) for delta in deltas}
    if len(shapes) > 1:
        raise ValueError(f"deltas of one parameter must share a shape, got {sorted(shapes)}")
    return torch.stack(list(deltas))


def weight_column(weights: Sequence[float] | None, stacked: Tensor, default: float = 1.0) -> Tensor:
    """Weights as a ``(T, 1, ..., 1)`` tensor that broadcasts over ``stacked`` (``T`` deltas).

    ``None`` gives ``default`` for every delta. The weights are at least float32, so weighted
    bf16/fp16 deltas come out in float32.
    """
    count = stacked.shape[0]
    dtype = torch.promote_types(stacked.dtype, torch.float32)
    if weights is None:
        values = torch.full((count,), default, dtype=dtype, device=stacked.device)
    else:
        if len(weights) != count:
            raise ValueError(f"got {len(weights)} weights for {count} deltas")
        values = torch.as_tensor(weights, dtype=dtype, device=stacked.device)
    return values.reshape((count,) + (1,) * (stacked.dim() - 1))


def check_density(density: float) -> None:
    """Refuse a fraction of entries to keep outside ``(0, 1]`` (0 would keep nothing)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(
            f"density is the fraction of entries kept and must lie in (0, 1], got {density}; "
            "use e.g. 0.2 to keep the largest 20%"
        )


def as_generator(rng: torch.Generator | int | None, device: torch.device) -> torch.Generator | None:
    """An explicit generator: an int seeds a fresh one on ``device``.

    ``None`` stays ``None``: torch's global RNG.
    """
    if isinstance(rng, int):
        return torch.Generator(device=device).manual_seed(rng)
    return rng
