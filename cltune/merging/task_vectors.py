"""Task vectors τ = θ_tuned − θ_base (Ilharco et al., ICLR 2023) over state dicts."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def _check_shape(key: str, expected: Tensor, got: Tensor, what: str) -> None:
    if expected.shape != got.shape:
        raise ValueError(f"{key!r}: base has shape {tuple(expected.shape)}, {what} has {tuple(got.shape)}")


def task_vector(base: Mapping[str, Tensor], tuned: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``τ[k] = θ_tuned[k] − θ_base[k]`` for every floating-point key present in both dicts.

    Keys only in one dict and integer buffers are left out. The difference is taken in at least
    float32 (bf16/fp16 subtraction would round it away), on ``tuned``'s device, detached.
    """
    delta: dict[str, Tensor] = {}
    for key, before in base.items():
        after = tuned.get(key)
        if after is None or not (before.is_floating_point() and after.is_floating_point()):
            continue
        _check_shape(key, before, after, "tuned")
        dtype = torch.promote_types(torch.promote_types(before.dtype, after.dtype), torch.float32)
        delta[key] = after.detach().to(dtype) - before.detach().to(after.device, dtype)
    return delta


def apply_task_vector(
    base: Mapping[str, Tensor], delta: Mapping[str, Tensor], scale: float = 1.0
) -> dict[str, Tensor]:
    """``θ[k] = θ_base[k] + scale · τ[k]``, in each base tensor's dtype and device.

    Keys of ``base`` without a delta are passed through (same tensor object); a delta key missing
    from ``base`` is an error, as is a shape mismatch.
    """
    unknown = [key for key in delta if key not in base]
    if unknown:
        raise ValueError(f"task vector has keys missing from the base: {unknown[:5]}")
    merged: dict[str, Tensor] = {}
    for key, value in base.items():
        if key not in delta:
            merged[key] = value
            continue
        step = delta[key]
        _check_shape(key, value, step, "task vector")
        dtype = torch.promote_types(torch.promote_types(value.dtype, step.dtype), torch.float32)
        moved = value.detach().to(dtype) + scale * step.detach().to(value.device, dtype)
        merged[key] = moved.to(value.dtype)
    return merged
