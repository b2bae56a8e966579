"""Routing rows to task adapters without a task id: nearest task prototype in feature space.

Nearest-class-mean classification (Mensink et al., TPAMI 2013; iCaRL, Rebuffi et al., CVPR 2017)
applied to tasks instead of classes: each task's prototype is the normalised mean of its training
rows' L2-normalised features, ``p_t = normalize(mean_i normalize(f_i))``; a row goes to
``argmax_t cos(f, p_t)``. With ``reject_quantile = q`` a row is sent to the base model instead when
its similarity to the nearest prototype is below the ``q``-quantile of that task's own training
similarities (an open-set rule: the row looks like none of the trained tasks).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from cltune.adapters.bank import BASE


class PrototypeRouter:
    """Task prototypes and the nearest-prototype rule (see the module docstring)."""

    def __init__(self, reject_quantile: float | None = None):
        if reject_quantile is not None and not 0.0 <= reject_quantile < 1.0:
            raise ValueError(f"reject_quantile must lie in [0, 1) or be None, got {reject_quantile}")
        self.reject_quantile = reject_quantile
        self.prototypes: dict[str, torch.Tensor] = {}
        self.thresholds: dict[str, float] = {}

    def add(self, name: str, features: torch.Tensor) -> None:
        """Fit task ``name``'s prototype (and rejection threshold) on its training rows' features."""
        if features.dim() != 2 or len(features) == 0:
            raise ValueError(f"task {name!r}: need a non-empty (rows, dim) feature matrix")
        unit = F.normalize(features.float(), dim=1)
        prototype = F.normalize(unit.mean(dim=0), dim=0)
        self.prototypes[name] = prototype
        if self.reject_quantile is not None:
            self.thresholds[name] = torch.quantile(unit @ prototype, self.reject_quantile).item()

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """``(rows, tasks)`` cosine similarity to each prototype, in :attr:`prototypes` order."""
        if not self.prototypes:
            raise RuntimeError("no task prototype yet: routing needs at least one trained task")
        return F.normalize(features.float(), dim=1) @ torch.stack(list(self.prototypes.values())).T

    def route(self, features: torch.Tensor) -> list[str]:
        """The adapter name for every row (or :data:`~cltune.adapters.bank.BASE` if rejected)."""
        best, index = self.similarities(features).max(dim=1)
        names = list(self.prototypes)
        routes = []
        for similarity, i in zip(best.tolist(), index.tolist(), strict=True):
            name = names[i]
            rejected = self.reject_quantile is not None and similarity < self.thresholds[name]
            routes.append(BASE if rejected else name)
        return routes

    def state_dict(self) -> dict[str, Any]:
        return {"prototypes": dict(self.prototypes), "thresholds": dict(self.thresholds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prototypes = dict(state["prototypes"])
        self.thresholds = dict(state["thresholds"])


def route_counts(routes: list[str]) -> dict[str, int]:
    """How many rows went to each adapter (or to the base), most frequent first."""
    return dict(Counter(routes).most_common())
