"""Density of masks and Jaccard overlap between two sets of masks."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of all entries that are True."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("density of an empty set of masks")
    return sum(int(m.sum()) for m in masks.values()) / total


def density_per_tensor(masks: Mapping[str, Tensor]) -> dict[str, float]:
    """Fraction of True entries in each mask."""
    return {name: int(m.sum()) / max(m.numel(), 1) for name, m in masks.items()}


def _counts(a: Tensor, b: Tensor) -> tuple[int, int]:
    a, b = a.bool(), b.bool().to(a.device)
    return int((a & b).sum()), int((a | b).sum())


def _check_same(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    if set(a) != set(b):
        raise ValueError(f"the masks name different parameters: {sorted(set(a) ^ set(b))[:3]}")
    for name in a:
        if a[name].shape != b[name].shape:
            shapes = f"{tuple(a[name].shape)} vs {tuple(b[name].shape)}"
            raise ValueError(f"{name}: the masks' shapes differ, {shapes}")


def jaccard(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """|A ∩ B| / |A ∪ B| over all entries; 1.0 when both masks are empty."""
    _check_same(a, b)
    inter = union = 0
    for name in a:
        i, u = _counts(a[name], b[name])
        inter, union = inter + i, union + u
    return inter / union if union else 1.0


def jaccard_per_tensor(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, float]:
    """|A ∩ B| / |A ∪ B| for each parameter; 1.0 where both are empty."""
    _check_same(a, b)
    out = {}
    for name in a:
        i, u = _counts(a[name], b[name])
        out[name] = i / u if u else 1.0
    return out
