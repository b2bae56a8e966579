"""Importance maps: per-parameter importances and their aggregates per layer × module type.

Any measure of the registry :mod:`cltune.selective.importance` computed from batches rather than
tracked during training can fill a map (``gradient``, ``fisher``, ``mas``, ``magnitude``,
``spider``, ``drift``, ``obs``, or one a user registered). A map is saved as one safetensors file
(tensor names = parameter names) whose metadata records the measure and what it was computed on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from cltune.analysis.layout import base_name, pivot, place
from cltune.models.scopes import scope_parameters
from cltune.selective.importance import (
    importance_measure,
    importance_names,
    load_importances,
    save_importances,
)

FORMAT = "cltune.importance_map/1"
STATS = ("mean", "sum", "max")


@dataclass
class ImportanceMap:
    """Per-parameter scores of one measure, with ``info`` (e.g. the task it was measured on)."""

    scores: dict[str, Tensor]
    method: str
    info: dict[str, str] = field(default_factory=dict)

    def modules(self) -> pd.DataFrame:
        """One row per (layer, module type): ``numel`` and the ``mean``, ``sum`` and ``max`` score.

        The mean is per entry, so modules of different sizes compare fairly; the sum says where
        the bulk of the importance lies.
        """
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for name, score in self.scores.items():
            where = place(name)
            values = score.detach().float()
            row = rows.setdefault(
                (where.layer, where.module_type),
                {"layer": where.layer, "module_type": where.module_type, "numel": 0, "sum": 0.0, "max": 0.0},
            )
            row["numel"] += values.numel()
            row["sum"] += float(values.sum())
            row["max"] = max(row["max"], float(values.max())) if values.numel() else row["max"]
        frame = pd.DataFrame(list(rows.values()), columns=["layer", "module_type", "numel", "sum", "max"])
        frame["mean"] = frame["sum"] / frame["numel"].clip(lower=1)
        return frame

    def table(self, stat: str = "mean") -> pd.DataFrame:
        """Layer × module-type table of ``stat`` (``mean``, ``sum`` or ``max``)."""
        if stat not in STATS:
            raise ValueError(f"unknown statistic {stat!r}; use one of {', '.join(STATS)}")
        return pivot(self.modules(), stat)

    def save(self, path: str | Path) -> None:
        """Write the scores and their description to ``path`` (safetensors)."""
        metadata = {**self.info, "format": FORMAT, "method": self.method}
        save_importances(path, self.scores, metadata)

    @classmethod
    def load(cls, path: str | Path) -> ImportanceMap:
        """Read a map written by :meth:`save`; a clear error if the file is missing or damaged."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"importance map {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            scores = load_importances(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"importance map {path} is damaged ({err}); compute it again") from err
        if metadata.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not an importance map written by cltune (format {metadata.get('format')!r}, "
                f"expected {FORMAT!r})"
            )
        metadata.pop("format")
        method = metadata.pop("method")
        return cls(scores, method, metadata)


def analysis_parameters(model: nn.Module, scope: str = "language_model") -> dict[str, nn.Parameter]:
    """The parameters of ``scope`` keyed by their base-model names, adapters (LoRA factors) left out.

    For a PEFT model these are its frozen base weights (``…q_proj.base_layer.weight`` is keyed
    ``…q_proj.weight``): their importance is measured through the adapted model, so maps of full
    fine-tuning and of adapter runs line up name by name.
    """
    return {base_name(name): p for name, p in scope_parameters(model, scope).items() if ".lora_" not in name}


def importance_map(
    model: nn.Module,
    data: Iterable[Mapping[str, Tensor]],
    method: str = "gradient",
    *,
    scope: str = "language_model",
    params: Mapping[str, nn.Parameter] | None = None,
    info: Mapping[str, str] | None = None,
    **options: Any,
) -> ImportanceMap:
    """Importance of each parameter of ``scope`` (or of ``params``) by measure ``method``.

    ``data`` are model-input batches with ``labels`` (see
    :func:`cltune.analysis.batches.task_batches`); ``options`` go to the measure (e.g.
    ``pretrained=`` for ``drift``). The model is left as it was: the measures compute gradients
    with ``torch.autograd.grad`` and restore training mode and ``requires_grad``.
    """
    measure = importance_measure(method)
    if measure.tracked:
        computed = importance_names(lambda m: not m.tracked)
        raise ValueError(
            f"importance measure {method!r} is tracked during training, not computed from batches; "
            f"use one of {', '.join(computed)}"
        )
    chosen = dict(params) if params is not None else analysis_parameters(model, scope)
    scores = measure.compute(model, chosen, data, **options)
    return ImportanceMap({n: s.cpu() for n, s in scores.items()}, method, dict(info or {}))
