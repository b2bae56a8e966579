"""Merging after every experience: the shared plugin of ``task-arithmetic``, ``ties``, ``dare``, ``wise-ft``.

Every experience fine-tunes the scope **from the base model** θ₀ (not from the previous merge), so
each task vector τ_t = θ_t − θ₀ (Ilharco et al., ICLR 2023) is the task's own, as the merging
papers assume. After experience t the model is set to θ₀ + merge(τ_1, …, τ_t) and evaluated; the
next experience starts from θ₀ again. The merge method comes from :mod:`cltune.merging`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cltune.merging import apply_task_vector, get_merge_method, merge_state_dicts, task_vector
from cltune.models.scopes import scope_parameters
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import Preset, finetune_scope
from cltune.utils import derive_seed

Weights = float | Sequence[float] | None


@dataclass
class MergeSpec:
    """A merge method of :data:`cltune.merging.MERGE_METHODS`, its task weights and its options.

    ``weights``: ``None`` (the method's default), one number λ for every task, or one number per task
    of the stream in order. Methods that draw random masks (DARE) get a seed derived from the run's
    seed and the stage unless ``options`` gives ``rng``.
    """

    method: str
    weights: Weights = None
    options: dict[str, Any] = field(default_factory=dict)

    def check(self, strategy: str) -> None:
        """Refuse an unknown method or option, a density outside (0, 1], or malformed weights."""
        try:
            merge = get_merge_method(self.method)
        except ValueError as err:
            raise ValueError(f"{strategy}: {err}") from None
        accepted = [p for p in inspect.signature(merge).parameters if p not in ("deltas", "weights")]
        unknown = [key for key in self.options if key not in accepted]
        if unknown:
            raise ValueError(
                f"{strategy}: merge method {self.method!r} has no option {unknown}; its options: {accepted}"
            )
        density = self.options.get("density")
        if density is not None and not 0.0 < density <= 1.0:
            raise ValueError(
                f"{strategy}: density is the kept fraction and must lie in (0, 1], got {density}"
            )
        number = (int, float)
        if not (
            self.weights is None
            or isinstance(self.weights, number)
            or (isinstance(self.weights, list | tuple) and all(isinstance(w, number) for w in self.weights))
        ):
            raise ValueError(
                f"{strategy}: weights must be a number or a list of numbers, got {self.weights!r}"
            )

    def weights_for(self, count: int) -> list[float] | None:
        """The weights of the first ``count`` tasks."""
        if self.weights is None:
            return None
        if isinstance(self.weights, int | float):
            return [float(self.weights)] * count
        if len(self.weights) < count:
            raise ValueError(
                f"{len(self.weights)} merge weights for {count} tasks: give one weight per task of the "
                "stream or a single number"
            )
        return [float(w) for w in self.weights[:count]]

    def method_options(self, seed: int, stage: int) -> dict[str, Any]:
        """The options for the merge at ``stage``: a DARE seed derived from (run seed, stage) if unset."""
        options = dict(self.options)
        if "rng" in inspect.signature(get_merge_method(self.method)).parameters:
            options.setdefault("rng", derive_seed(seed, "merge", stage))
        return options


class TaskVectorMergePlugin(Plugin):
    """Fine-tune from θ₀ each experience, then evaluate θ₀ + merge(τ_1..τ_t) (module docstring)."""

    full_parameters = "it subtracts and merges whole parameters (task vectors) by name"

    def __init__(self, spec: MergeSpec):
        self.spec = spec
        self.base: dict[str, torch.Tensor] = {}  # θ₀ of the scope, on the CPU
        self.task_vectors: list[dict[str, torch.Tensor]] = []
        self.scope = ""

    def prepare(self, model: nn.Module, scope: str) -> nn.Module:
        """The preset's ``prepare``: remember θ₀ of ``scope`` (the loaded model), then fine-tune it."""
        self.scope = scope
        self.base = {n: p.detach().to("cpu", copy=True) for n, p in scope_parameters(model, scope).items()}
        return finetune_scope(model, scope)

    def _write(self, model: nn.Module, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, parameter in scope_parameters(model, self.scope).items():
                parameter.copy_(values[name])

    def adapt_model(self, strategy) -> None:
        self._write(strategy.model, self.base)

    def after_training_exp(self, strategy) -> None:
        tuned = {n: p.detach().cpu() for n, p in scope_parameters(strategy.model, self.scope).items()}
        self.task_vectors.append(task_vector(self.base, tuned))
        count = len(self.task_vectors)
        merged = merge_state_dicts(
            self.task_vectors,
            self.spec.method,
            self.spec.weights_for(count),
            **self.spec.method_options(strategy.config.seed, count),
        )
        self._write(strategy.model, apply_task_vector(self.base, merged))

    def state_dict(self) -> dict[str, Any]:
        return {"task_vectors": self.task_vectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_vectors = list(state["task_vectors"])


def merge_preset(strategy: str, method: str, weights: Weights, options: dict[str, Any]) -> Preset:
    """The preset of a task-vector merging strategy; options set to ``None`` take the method's default."""
    spec = MergeSpec(method, weights, {k: v for k, v in options.items() if v is not None})
    spec.check(strategy)
    plugin = TaskVectorMergePlugin(spec)
    return Preset(plugins=[plugin], prepare=plugin.prepare)
