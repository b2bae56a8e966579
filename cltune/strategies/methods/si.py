"""Synaptic Intelligence: penalise changes to the weights whose path integral reduced the loss.

Zenke et al., ICML 2017, "Continual Learning Through Synaptic Intelligence":
L = L_t + c Σ_k Ω_k (θ_k − θ*_k)², Ω_k = Σ_{s<t} ω_{s,k} / ((Δ_{s,k})² + ξ), ω_s the path
integral −Σ g·Δθ over the steps of task s (:class:`cltune.selective.SITracker`), Δ_s the total
change over task s and θ* the weights after the last task. With AdamW a step may move against
the gradient, so ω can be negative; Ω is clipped at 0 so that the penalty stays a penalty.
"""

from __future__ import annotations

from cltune.selective import SITracker
from cltune.strategies.calibration import scope_params
from cltune.strategies.plugins.penalties import QuadraticPenalty, accumulated, anchor_of, check_strength
from cltune.strategies.registry import Preset, register


class SIPlugin(QuadraticPenalty):
    method = "si"

    def __init__(self, strength: float, xi: float):
        super().__init__(strength)
        self.xi = xi
        self._tracker: SITracker | None = None

    def before_training_exp(self, strategy) -> None:
        super().before_training_exp(strategy)
        self._tracker = SITracker(self.xi)

    def before_update(self, strategy) -> None:
        self._tracker.before_update(self._params)

    def after_update(self, strategy) -> None:
        self._tracker.after_update(self._params)

    def consolidate(self, strategy) -> None:
        params = scope_params(strategy, self.method)
        importance = {name: o.clamp_(min=0.0) for name, o in self._tracker.importance().items()}
        self.terms = [(accumulated(self.terms, importance), anchor_of(params))]
        self._tracker = None


@register("si")
def si(strength: float = 1.0, xi: float = 1e-3) -> Preset:
    """Synaptic Intelligence: pull towards the last weights, weighted by each weight's path integral."""
    check_strength("si", "xi", xi)
    if xi == 0:
        raise ValueError("si: xi (the damping of Ω = ω / (Δ² + ξ)) must be > 0, got 0")
    return Preset(plugins=[SIPlugin(strength, float(xi))])
