"""LoRA merging in factor space: merge the ``A`` factors and the ``B`` factors separately.

Per module, each adapter's weight ``w_t`` and scaling ``s_t`` are split over its two factors as
``√|w_t s_t|·sign(w_t s_t)`` for ``A_t`` and ``√|w_t s_t|`` for ``B_t``; the method merges
``{A_t}`` and ``{B_t}`` on their own with those weights, and the result is an adapter of the same
rank with scaling 1.
This is the element-wise LoRA composition of LoraHub (Huang et al., "LoraHub: Efficient
Cross-Task Generalization via Dynamic LoRA Composition", COLM 2024), ``Â = Σ w_t A_t``,
``B̂ = Σ w_t B_t``, and the rule of PEFT's ``add_weighted_adapter`` with ``combination_type``
``linear``, ``ties``, ``magnitude_prune`` (same factors, same ``ΔW``) or ``dare_*`` (same rule,
cltune's own seeded draw). It differs from PEFT in two cases: PEFT copies the first adapter's
config, so when that adapter uses rsLoRA PEFT's merged adapter keeps ``use_rslora`` with
``α = r``, i.e. scaling ``√r`` and a ``ΔW`` ``√r`` times this one's (the factors are the same);
and for a single adapter PEFT always uses ``linear``, where this applies the method (e.g. TIES
still trims). It needs adapters of equal rank and targets, and its ``B̂ Â`` is *not* the merge
of the ``ΔW_t`` (cross terms ``B_i A_j`` appear): for the exact merge use
:func:`cltune.merging.merge_lora_adapters`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from cltune.merging._common import as_generator
from cltune.merging.lora import MergedLora, lora_factors, lora_scaling, module_name
from cltune.merging.registry import MergeMethod, merge_state_dicts

if TYPE_CHECKING:
    from peft import LoraConfig


def merge_lora_factors(
    state_dicts: Sequence[Mapping[str, Tensor]],
    configs: Sequence[LoraConfig],
    method: str | MergeMethod = "task_arithmetic",
    weights: Sequence[float] | None = None,
    **params: Any,
) -> MergedLora:
    """One adapter of the common rank whose ``A`` and ``B`` are the merges of the adapters' factors.

    ``weights`` default to 1 per adapter. ValueError when the adapters differ in rank or in the
    modules they target (the method needs factors of one shape), naming the ranks and the fix.
    """
    if len(state_dicts) == 0:
        raise ValueError("merging needs at least one adapter; train a task before merging")
    if len(state_dicts) != len(configs):
        raise ValueError(f"got {len(state_dicts)} adapters but {len(configs)} configs")
    weights = [1.0] * len(state_dicts) if weights is None else list(weights)
    if len(weights) != len(state_dicts):
        raise ValueError(f"got {len(weights)} weights for {len(state_dicts)} adapters")
    factors = [lora_factors(sd) for sd in state_dicts]
    rank = _common_rank(factors)
    if isinstance(params.get("rng"), int):  # one generator for every module and both factors
        params["rng"] = as_generator(params["rng"], next(iter(factors[0].values()))[0].device)
    state: dict[str, Tensor] = {}
    for module in factors[0]:
        scaled = [
            w * lora_scaling(c, module, f[module][0].shape[0])
            for w, c, f in zip(weights, configs, factors, strict=True)
        ]
        roots = [math.sqrt(abs(value)) for value in scaled]
        a_weights = [math.copysign(root, value) for root, value in zip(roots, scaled, strict=True)]
        for side, side_weights in (("A", a_weights), ("B", roots)):
            tensors = [{module: f[module][side == "B"].float()} for f in factors]
            merged = merge_state_dicts(tensors, method, side_weights, **params)[module]
            state[f"{module}.lora_{side}.weight"] = merged
    config = dataclasses.replace(
        configs[0],
        r=rank,
        lora_alpha=float(rank),
        use_rslora=False,
        target_modules=sorted(module_name(module) for module in factors[0]),
        rank_pattern={},
        alpha_pattern={},
        modules_to_save=None,
    )
    return MergedLora(state, config)


def _common_rank(factors: Sequence[Mapping[str, tuple[Tensor, Tensor]]]) -> int:
    """The one rank of every adapter's factors; ValueError if ranks or targeted modules differ."""
    ranks = sorted({a.shape[0] for adapter in factors for a, _ in adapter.values()})
    if len(ranks) > 1:
        raise ValueError(
            f"merging LoRA factors needs adapters of one rank, got ranks {ranks}; train them with "
            "the same r, or merge the exact ΔW instead (merge_lora_adapters, lora-merge space='delta')"
        )
    modules = {frozenset(adapter) for adapter in factors}
    if len(modules) > 1:
        raise ValueError(
            "merging LoRA factors needs adapters on the same modules; give them the same target "
            "modules, or merge the exact ΔW instead (merge_lora_adapters)"
        )
    return ranks[0]
