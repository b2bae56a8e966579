"""Routing rows to task adapters without a task id: the nearest task prototype in feature space.

Each task ``t`` is a Gaussian with its own mean ``μ_t`` (its prototype) and a covariance ``Σ`` shared
by all tasks, estimated from every task's training features (the tied-covariance class model of
Lee et al., NeurIPS 2018, "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
Adversarial Attacks"). A row ``f`` goes to ``argmin_t (f − μ_t)ᵀ Σ⁻¹ (f − μ_t)``. Unlike the plain
nearest mean, this whitens what varies inside every task (the image content, when tasks ask other
questions about the same images), so a small but consistent shift between tasks decides.
``Σ = S / N + ε · tr(S / N) / d · I`` with ``S`` the pooled within-task scatter of ``N`` rows in
``d`` dimensions and ``ε`` = :data:`SHRINKAGE`, so ``Σ`` is invertible with few rows.

With ``reject_rate = q`` a row whose distance to its nearest prototype exceeds the ``(1 − q)``
quantile of that task's own training distances goes to the base model instead (Lee et al.'s
distance-based out-of-distribution rule): about a fraction ``q`` of in-task rows is lost, in exchange
for rows of tasks never trained (the general tasks) keeping the base model. The training distances
are measured out of fold (:data:`FOLDS`-fold cross-fitting, as in cross-conformal prediction, Vovk
2015): a model fitted on a row itself puts it too close, which would reject far more than ``q`` of
new rows when a task has few training rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from cltune.adapters.bank import BASE

SHRINKAGE = 1e-3
FOLDS = 5


def fit_gaussians(tasks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(means (tasks, dim), Σ⁻¹)``: task means and the shrunk, shared within-task covariance."""
    means = torch.stack([rows.mean(dim=0) for rows in tasks])
    centred = torch.cat([rows - mean for rows, mean in zip(tasks, means, strict=True)])
    covariance = centred.T @ centred / len(centred)
    dim = covariance.shape[0]
    ridge = SHRINKAGE * covariance.trace().clamp(min=1e-12) / dim
    return means, torch.linalg.inv(covariance + ridge * torch.eye(dim, dtype=covariance.dtype))


def mahalanobis(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """``(rows, tasks)`` squared distances ``(f − μ_t)ᵀ Σ⁻¹ (f − μ_t)``."""
    diff = features[:, None, :] - means[None, :, :]
    return torch.einsum("rtd,de,rte->rt", diff, precision, diff)


class PrototypeRouter:
    """Task prototypes under a shared-covariance Mahalanobis distance (see the module docstring)."""

    def __init__(self, reject_rate: float | None = None):
        if reject_rate is not None and not 0.0 <= reject_rate < 1.0:
            raise ValueError(f"reject_rate must lie in [0, 1) or be None, got {reject_rate}")
        self.reject_rate = reject_rate
        self.features: dict[str, torch.Tensor] = {}  # training features per task, float64
        self._fitted: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add(self, name: str, features: torch.Tensor) -> None:
        """Add task ``name`` from its training rows' ``(rows, dim)`` features."""
        if features.dim() != 2 or len(features) == 0:
            raise ValueError(f"task {name!r}: need a non-empty (rows, dim) feature matrix")
        self.features[name] = features.detach().to("cpu", torch.float64)
        self._fitted = None

    def _fit(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(means, precision Σ⁻¹, rejection thresholds (tasks,))``, cached until the next add."""
        if self._fitted is None:
            if not self.features:
                raise RuntimeError("no task prototype yet: routing needs at least one trained task")
            tasks = list(self.features.values())
            means, precision = fit_gaussians(tasks)
            thresholds = torch.empty(0)
            if self.reject_rate is not None:
                thresholds = torch.stack(
                    [torch.quantile(d, 1.0 - self.reject_rate) for d in self._out_of_fold(tasks)]
                )
            self._fitted = (means, precision, thresholds)
        return self._fitted

    @staticmethod
    def _out_of_fold(tasks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each task's training distances to its own mean, each row measured by a fit without it."""
        folds = min(FOLDS, min(len(rows) for rows in tasks))
        if folds < 2:
            raise ValueError("rejection needs at least 2 training rows per task; set reject_rate=None")
        held: list[list[torch.Tensor]] = [[] for _ in tasks]
        for fold in range(folds):
            keep = [torch.arange(len(rows)) % folds != fold for rows in tasks]
            means, precision = fit_gaussians([rows[k] for rows, k in zip(tasks, keep, strict=True)])
            for t, (rows, k) in enumerate(zip(tasks, keep, strict=True)):
                held[t].append(mahalanobis(rows[~k], means[t : t + 1], precision)[:, 0])
        return [torch.cat(parts) for parts in held]

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """``(rows, tasks)`` squared Mahalanobis distances to each prototype, in task order."""
        means, precision, _ = self._fit()
        return mahalanobis(features.detach().to("cpu", torch.float64), means, precision)

    def route(self, features: torch.Tensor) -> list[str]:
        """The adapter name for every row (or :data:`~cltune.adapters.bank.BASE` if rejected)."""
        _, _, thresholds = self._fit()
        best, index = self.distances(features).min(dim=1)
        names = list(self.features)
        rejected = (
            best > thresholds[index] if self.reject_rate is not None else torch.zeros_like(best, dtype=bool)
        )
        return [BASE if no else names[i] for i, no in zip(index.tolist(), rejected.tolist(), strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"features": dict(self.features)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.features = dict(state["features"])
        self._fitted = None


def route_counts(routes: list[str]) -> dict[str, int]:
    """How many rows went to each adapter (or to the base), most frequent first."""
    return dict(Counter(routes).most_common())
