"""Shared checks and shapes for the merge methods (one parameter's deltas at a time)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import torch
from torch import Tensor


def check_deltas(deltas: Sequence[Tensor]) -> None:
    """Refuse an empty list of one parameter's task vectors, or vectors of mixed shapes."""
    if len(deltas) == 0:
        raise ValueError("merging needs at least one delta")
    shapes = {tuple(delta.shape) for delta in deltas}
    if len(shapes) > 1:
        raise ValueError(f"deltas of one parameter must share a shape, got {sorted(shapes)}")


def stack_deltas(deltas: Sequence[Tensor]) -> Tensor:
    """Stack one parameter's task vectors on a new dim 0 (checked by :func:`check_deltas`)."""
    check_deltas(deltas)
    return torch.stack(list(deltas))


def weight_vector(weights: Sequence[float] | None, deltas: Sequence[Tensor], default: float = 1.0) -> Tensor:
    """Weights as a ``(T,)`` tensor for ``T`` deltas, the form ``peft.utils.merge_utils`` takes.

    ``None`` gives ``default`` for every delta. The weights are at least float32 (and as wide as
    the widest delta), so weighted bf16/fp16 deltas come out in float32.
    """
    check_deltas(deltas)
    dtype = reduce(torch.promote_types, (delta.dtype for delta in deltas), torch.float32)
    return _weights(weights, len(deltas), dtype, deltas[0].device, default)


def weight_column(weights: Sequence[float] | None, stacked: Tensor, default: float = 1.0) -> Tensor:
    """:func:`weight_vector` as a ``(T, 1, ..., 1)`` tensor that broadcasts over ``stacked``."""
    dtype = torch.promote_types(stacked.dtype, torch.float32)
    values = _weights(weights, stacked.shape[0], dtype, stacked.device, default)
    return values.reshape((stacked.shape[0],) + (1,) * (stacked.dim() - 1))


def _weights(
    weights: Sequence[float] | None, count: int, dtype: torch.dtype, device: torch.device, default: float
) -> Tensor:
    if weights is None:
        return torch.full((count,), default, dtype=dtype, device=device)
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} weights for {count} deltas")
    return torch.as_tensor(weights, dtype=dtype, device=device)


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
