"""Quadratic weight penalties: the shared mechanism of EWC, MAS, SI and L2.

Each keeps a list of terms (Ω, θ*) — an importance per entry (None for uniform) and the
anchor weights — and adds ``strength · scale · Σ_terms Σ_k Ω_k (θ_k − θ*_k)²`` to the template's
``loss`` at ``before_backward``, so the penalty's gradient flows with the task loss (and into
gradient accumulation and clipping). Subclasses decide when terms are made (``consolidate``).
The penalty is computed in float32, whatever the weights' dtype; Ω and θ* are kept as float32
on the weights' device (8 bytes per trainable parameter per term).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cltune.strategies.calibration import scope_params, snapshot
from cltune.strategies.plugin import Plugin

Term = tuple[dict[str, Tensor] | None, dict[str, Tensor]]


def check_strength(method: str, name: str, value: float) -> None:
    """Raise unless ``value`` is a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < float("inf"):
        raise ValueError(f"{method}: {name} must be a finite number >= 0, got {value!r}")


def anchor_of(params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """θ* as float32 copies of ``params``."""
    return {name: t.float() for name, t in snapshot(params).items()}


class QuadraticPenalty(Plugin):
    """Adds ``strength · scale · Σ Ω (θ − θ*)²`` over ``self.terms`` to every training loss."""

    full_parameters = "its penalty reads whole parameters and importances by name (EWC, MAS, SI, L2)"

    method = "penalty"
    scale = 1.0

    def __init__(self, strength: float) -> None:
        check_strength(self.method, "strength", strength)
        self.strength = float(strength)
        self.terms: list[Term] = []
        self._params: dict[str, nn.Parameter] = {}

    def before_training_exp(self, strategy) -> None:
        self._params = scope_params(strategy, self.method)
        self.terms = [(_moved(o, strategy.device), _moved(a, strategy.device)) for o, a in self.terms]

    def penalty(self) -> Tensor | None:
        """The current penalty, or None while there is no term."""
        if not self.terms:
            return None
        total = torch.zeros((), device=next(iter(self._params.values())).device)
        for omega, anchor in self.terms:
            for name, theta_star in anchor.items():
                p = self._params.get(name)
                if p is None:
                    continue
                squared = (p.float() - theta_star).pow(2)
                total = total + (squared.sum() if omega is None else (squared * omega[name]).sum())
        return self.strength * self.scale * total

    def before_backward(self, strategy) -> None:
        penalty = self.penalty()
        if penalty is not None:
            strategy.loss = strategy.loss + penalty

    def after_training_exp(self, strategy) -> None:
        self.consolidate(strategy)
        self._params = {}

    def consolidate(self, strategy) -> None:
        """Update ``self.terms`` at the end of an experience."""

    def state_dict(self) -> dict[str, Any]:
        return {"terms": [(_moved(o, "cpu"), _moved(a, "cpu")) for o, a in self.terms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.terms = list(state["terms"])


def _moved(tensors: dict[str, Tensor] | None, device: torch.device | str) -> dict[str, Tensor] | None:
    return None if tensors is None else {name: t.to(device) for name, t in tensors.items()}


def accumulated(previous: list[Term], new: dict[str, Tensor], decay: float = 1.0) -> dict[str, Tensor]:
    """decay·Ω_old + Ω_new, with Ω_old the single term of ``previous`` (Ω_new alone if none)."""
    if not previous:
        return new
    old = previous[0][0]
    return {name: old[name].to(o.device).mul(decay).add_(o) for name, o in new.items()}
