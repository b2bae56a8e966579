"""Exact LoRA merging: ΔW = s · B A per module, merged with any registered method, then refactorised
by truncated SVD into a new adapter of chosen rank.

Keys follow PEFT: ``get_peft_model_state_dict`` gives ``<module>.lora_A.weight`` /
``<module>.lora_B.weight`` (adapter name removed; ``<module>`` starts with ``base_model.model.`` for
a ``PeftModel``), ``model.state_dict()`` gives ``<module>.lora_A.<adapter>.weight``; both are read.
``A`` is ``(r, in)``, ``B`` is ``(out, r)`` and PEFT's scaling is ``s = lora_alpha / r``
(``lora_alpha / √r`` with rsLoRA), with ``lora_alpha`` taken from ``alpha_pattern`` when a pattern
matches the module. ΔW is in ``B @ A``'s ``(out, in)`` layout, i.e. ``nn.Linear``'s; with
``fan_in_fan_out`` the base weight is its transpose. Only plain LoRA on linear layers is exact
here: DoRA, LoRA biases, embedding or convolution LoRA and ``modules_to_save`` are refused.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from cltune.merging.registry import MergeMethod, merge_state_dicts

if TYPE_CHECKING:  # peft (and transformers behind it) loads only when a LoRA function runs
    from peft import LoraConfig

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_PEFT_PREFIX = "base_model.model."


class MergedLora(NamedTuple):
    """A merged adapter: ``state_dict`` for ``set_peft_model_state_dict`` and its ``config``."""

    state_dict: dict[str, Tensor]
    config: LoraConfig


def module_name(module_key: str) -> str:
    """The module's name in the base model, as PEFT's target/pattern matching sees it."""
    return module_key.removeprefix(_PEFT_PREFIX)


def lora_scaling(config: LoraConfig, module_key: str, rank: int) -> float:
    """PEFT's ``s = α / r`` (rsLoRA: ``α / √r``), ``α`` from ``alpha_pattern`` if one matches."""
    from peft.utils.other import get_pattern_key

    name = module_name(module_key)
    patterns = config.alpha_pattern or {}
    alpha = patterns.get(get_pattern_key(patterns.keys(), name), config.lora_alpha)
    return alpha / math.sqrt(rank) if config.use_rslora else alpha / rank


def lora_factors(state_dict: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """``{module key: (A, B)}`` from one adapter's state dict; ValueError on anything else."""
    found: dict[str, dict[str, Tensor]] = {}
    adapters: set[str] = set()
    for key, value in state_dict.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise ValueError(
                f"{key!r} is not a LoRA A/B weight; only plain LoRA adapters on linear layers "
                "can be merged exactly"
            )
        if match["adapter"] is not None:
            adapters.add(match["adapter"])
        found.setdefault(match["module"], {})[match["factor"]] = value
    if len(adapters) > 1:
        raise ValueError(f"state dict mixes adapters {sorted(adapters)}; pass one adapter")
    factors: dict[str, tuple[Tensor, Tensor]] = {}
    for module, pair in found.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{module!r} has only lora_{''.join(pair)}; both factors are needed")
        a, b = pair["A"], pair["B"]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(
                f"{module!r}: expected A (r, in) and B (out, r), got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        factors[module] = (a, b)
    return factors


def lora_delta_weights(state_dict: Mapping[str, Tensor], config: LoraConfig) -> dict[str, Tensor]:
    """Exact ``ΔW = s · B @ A`` per module key, in at least float32."""
    if config.use_dora:
        raise ValueError("DoRA adapters are not a plain low-rank delta; they cannot be merged here")
    if config.target_parameters:
        raise ValueError("adapters on target_parameters (not modules) are not supported")
    deltas: dict[str, Tensor] = {}
    for module, (a, b) in lora_factors(state_dict).items():
        dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
        product = b.detach().to(dtype) @ a.detach().to(dtype)
        deltas[module] = lora_scaling(config, module, a.shape[0]) * product
    return deltas


def merge_lora_deltas(
    state_dicts: Sequence[Mapping[str, Tensor]],
    configs: Sequence[LoraConfig],
    method: str | MergeMethod = "task_arithmetic",
    weights: Sequence[float] | None = None,
    **params: Any,
) -> dict[str, Tensor]:
    """Merged ``ΔW`` per module key: each adapter's exact ``s_t B_t A_t`` merged by ``method``.

    A module that an adapter does not target counts as a zero delta for it. ``params`` go to
    the merge method (``density``, ``rng``, ...), as in :func:`merge_state_dicts`.
    """
    if len(state_dicts) != len(configs):
        raise ValueError(f"got {len(state_dicts)} adapters but {len(configs)} configs")
    deltas = [lora_delta_weights(sd, cfg) for sd, cfg in zip(state_dicts, configs, strict=True)]
    return merge_state_dicts(deltas, method, weights, **params)


def factorise_delta(delta: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(A, B)``, ``A`` ``(rank, in)``, ``B`` ``(out, rank)``: ``B @ A`` is the best
    rank-``rank`` approximation of ``delta`` (Eckart–Young).

    With ``delta = U Σ Vᵀ`` truncated to the top ``rank`` triplets, the singular values are split
    evenly: ``B = U √Σ``, ``A = √Σ Vᵀ``, so both factors have the same singular values and neither
    dominates when the adapter trains on. If ``rank`` exceeds ``min(out, in)`` the extra rows of
    ``A`` and columns of ``B`` are zero. Computed in at least float32.
    """
    if delta.dim() != 2:
        raise ValueError(f"can only factorise a 2-D delta, got shape {tuple(delta.shape)}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    work = delta.detach().to(torch.promote_types(delta.dtype, torch.float32))
    left, singular, right_t = torch.linalg.svd(work, full_matrices=False)
    keep = min(rank, singular.numel())
    root = singular[:keep].sqrt()
    a = work.new_zeros(rank, work.shape[1])
    b = work.new_zeros(work.shape[0], rank)
    a[:keep] = root[:, None] * right_t[:keep]
    b[:, :keep] = left[:, :keep] * root
    return a, b


def merge_lora_adapters(
    state_dicts: Sequence[Mapping[str, Tensor]],
    configs: Sequence[LoraConfig],
    rank: int,
    method: str | MergeMethod = "task_arithmetic",
    weights: Sequence[float] | None = None,
    *,
    lora_alpha: float | None = None,
    use_rslora: bool = False,
    **params: Any,
) -> MergedLora:
    """One LoRA adapter of rank ``rank`` whose ``s' B' A'`` is the best rank-``rank`` approximation
    of the merged ``ΔW`` (:func:`merge_lora_deltas`), per module.

    ``s'`` follows the new config (``lora_alpha`` defaults to ``rank``, so ``s' = 1``). The state
    dict uses ``get_peft_model_state_dict`` keys (``<module>.lora_A.weight``); the config copies
    ``configs[0]`` with the new rank and alpha, no patterns, and ``target_modules`` set to exactly
    the merged modules. Load with ``model.add_adapter(name, merged.config)`` then
    ``set_peft_model_state_dict(model, merged.state_dict, adapter_name=name)``.
    """
    merged = merge_lora_deltas(state_dicts, configs, method, weights, **params)
    alpha = float(rank) if lora_alpha is None else lora_alpha
    scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    state: dict[str, Tensor] = {}
    for module, delta in merged.items():
        a, b = factorise_delta(delta / scaling, rank)
        state[f"{module}.lora_A.weight"] = a
        state[f"{module}.lora_B.weight"] = b
    config = dataclasses.replace(
        configs[0],
        r=rank,
        lora_alpha=alpha,
        use_rslora=use_rslora,
        target_modules=sorted(module_name(module) for module in merged),
        rank_pattern={},
        alpha_pattern={},
        layers_to_transform=None,
        layers_pattern=None,
        exclude_modules=None,
        modules_to_save=None,
    )
    return MergedLora(state, config)
