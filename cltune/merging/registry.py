"""Merge methods by name, and the helper that applies one key by key over state dicts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cltune.merging._common import as_generator
from cltune.merging.dare import dare_linear_merge, dare_ties_merge
from cltune.merging.magnitude_prune import magnitude_prune_merge
from cltune.merging.task_arithmetic import task_arithmetic_merge
from cltune.merging.ties import ties_merge
from cltune.merging.tsv import tsv_merge
from cltune.merging.wise_ft import wise_ft_merge
from cltune.utils import register_unique, unknown_name_error

MergeMethod = Callable[..., Tensor]
"""``merge(deltas: Sequence[Tensor], weights: Sequence[float] | None, **params) -> Tensor``."""

MERGE_METHODS: dict[str, MergeMethod] = {
    "task_arithmetic": task_arithmetic_merge,
    "ties": ties_merge,
    "dare_linear": dare_linear_merge,
    "dare_ties": dare_ties_merge,
    "magnitude_prune": magnitude_prune_merge,
    "wise_ft": wise_ft_merge,
    "tsv": tsv_merge,
}


def register_merge_method(name: str) -> Callable[[MergeMethod], MergeMethod]:
    """Register a merge function as ``name`` (a decorator, or ``register_merge_method("x")(f)``), so
    ``merge_state_dicts(..., method=name)`` and the presets that take a merge method name find it."""

    def wrap(merge: MergeMethod) -> MergeMethod:
        return register_unique(MERGE_METHODS, "merge method", name, merge)

    return wrap


def get_merge_method(name: str) -> MergeMethod:
    """The merge function registered under ``name``; ValueError listing the known names if none."""
    if name not in MERGE_METHODS:
        raise unknown_name_error("merge method", name, MERGE_METHODS)
    return MERGE_METHODS[name]


def merge_state_dicts(
    deltas: Sequence[Mapping[str, Tensor]],
    method: str | MergeMethod = "task_arithmetic",
    weights: Sequence[float] | None = None,
    **params: Any,
) -> dict[str, Tensor]:
    """Merge task-vector dicts key by key with ``method`` (a registered name or a function).

    Keys follow the first-seen order over all dicts. A dict without a key counts as a zero delta
    there (that task did not move the parameter). An int ``rng`` param is turned into one
    generator for the whole call, so one seed drives every key and keys get different masks.
    """
    merge = get_merge_method(method) if isinstance(method, str) else method
    if len(deltas) == 0:
        raise ValueError("merging needs at least one task vector")
    keys = list(dict.fromkeys(key for delta in deltas for key in delta))
    if isinstance(params.get("rng"), int):
        first = next((delta[key] for delta in deltas for key in delta), torch.empty(0))
        params["rng"] = as_generator(params["rng"], first.device)
    merged: dict[str, Tensor] = {}
    for key in keys:
        present = [delta[key] for delta in deltas if key in delta]
        shapes = {tuple(tensor.shape) for tensor in present}
        if len(shapes) > 1:
            raise ValueError(f"{key!r}: task vectors disagree on the shape, got {sorted(shapes)}")
        tensors = [delta[key] if key in delta else torch.zeros_like(present[0]) for delta in deltas]
        merged[key] = merge(tensors, weights, **params)
    return merged
