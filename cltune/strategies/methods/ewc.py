"""Elastic Weight Consolidation, separate (one penalty per past task) and online.

Kirkpatrick et al., PNAS 2017, "Overcoming catastrophic forgetting in neural networks":
L = L_t + λ/2 Σ_{s<t} Σ_k F_{s,k} (θ_k − θ*_{s,k})², F_s the diagonal empirical Fisher of task s
(:func:`cltune.selective.importance.fisher`, the mean over ``fisher_batches`` training batches
of the squared batch gradient) and θ*_s the weights after task s. ``mode="online"`` is the
online EWC of Schwarz et al., ICML 2018, "Progress & Compress": one term,
F* ← γ·F* + F_t and θ* ← θ_t, so memory does not grow with the number of tasks.
"""

from __future__ import annotations

from cltune.selective.importance import fisher
from cltune.strategies.calibration import experience_importance, scope_params
from cltune.strategies.plugins.penalties import QuadraticPenalty, accumulated, anchor_of, check_strength
from cltune.strategies.registry import Preset, register

MODES = ("separate", "online")


class EWCPlugin(QuadraticPenalty):
    method = "ewc"
    scale = 0.5

    def __init__(self, strength: float, mode: str, decay: float, fisher_batches: int | None):
        super().__init__(strength)
        self.mode = mode
        self.decay = decay
        self.fisher_batches = fisher_batches

    def consolidate(self, strategy) -> None:
        params = scope_params(strategy, self.method)
        importance = experience_importance(strategy, fisher, params, self.fisher_batches, self.method)
        if self.mode == "separate":
            self.terms.append((importance, anchor_of(params)))
        else:
            self.terms = [(accumulated(self.terms, importance, self.decay), anchor_of(params))]


@register("ewc")
def ewc(
    strength: float = 1000.0, mode: str = "separate", decay: float = 1.0, fisher_batches: int | None = 16
) -> Preset:
    """EWC: a Fisher-weighted pull towards each earlier task's weights (mode separate or online)."""
    if mode not in MODES:
        raise ValueError(f"ewc: mode must be one of {MODES}, got {mode!r}")
    check_strength("ewc", "decay", decay)
    if fisher_batches is not None and fisher_batches < 1:
        raise ValueError(f"ewc: fisher_batches must be a positive integer or None, got {fisher_batches}")
    return Preset(plugins=[EWCPlugin(strength, mode, float(decay), fisher_batches)])
