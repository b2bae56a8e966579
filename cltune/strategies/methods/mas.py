"""Memory Aware Synapses: penalise changes to the weights the output norm is sensitive to.

Aljundi et al., ECCV 2018, "Memory Aware Synapses: Learning what (not) to forget":
L = L_t + λ Σ_k Ω_k (θ_k − θ*_k)², Ω_k = 1/N Σ |∂‖f(x)‖²₂/∂θ_k| over the data of the tasks
learned so far (:func:`cltune.selective.importance.mas`, on ``mas_batches`` training batches of
each experience, answer-token logits) accumulated over tasks, θ* the weights after the last task.
"""

from __future__ import annotations

from cltune.selective.importance import mas as mas_importance
from cltune.strategies.calibration import experience_importance, scope_params
from cltune.strategies.plugins.penalties import QuadraticPenalty, accumulated, anchor_of
from cltune.strategies.registry import Preset, register


class MASPlugin(QuadraticPenalty):
    method = "mas"

    def __init__(self, strength: float, mas_batches: int | None):
        super().__init__(strength)
        self.mas_batches = mas_batches

    def consolidate(self, strategy) -> None:
        params = scope_params(strategy, self.method)
        importance = experience_importance(strategy, mas_importance, params, self.mas_batches, self.method)
        self.terms = [(accumulated(self.terms, importance), anchor_of(params))]


@register("mas")
def mas(strength: float = 1.0, mas_batches: int | None = 16) -> Preset:
    """MAS: pull towards the last weights, weighted by the output-norm sensitivity of each weight."""
    if mas_batches is not None and mas_batches < 1:
        raise ValueError(f"mas: mas_batches must be a positive integer or None, got {mas_batches}")
    return Preset(plugins=[MASPlugin(strength, mas_batches)])
