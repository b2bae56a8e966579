"""L2 regularisation towards the weights before each experience.

L = L_t + λ/2 ‖θ − θ*‖², θ* the weights at the start of the experience (for the first one, the
pre-trained weights: the L2-SP penalty of Li et al., ICML 2018, "Explicit Inductive Bias for
Transfer Learning with Convolutional Networks"; afterwards, the weights after the previous
task). The uniform-importance baseline of EWC (Kirkpatrick et al., PNAS 2017, Fig. 2).
"""

from __future__ import annotations

from cltune.strategies.plugins.penalties import QuadraticPenalty, anchor_of
from cltune.strategies.registry import Preset, register


class L2Plugin(QuadraticPenalty):
    method = "l2"
    scale = 0.5

    def before_training_exp(self, strategy) -> None:
        super().before_training_exp(strategy)
        self.terms = [(None, anchor_of(self._params))]


@register("l2")
def l2(strength: float = 1.0) -> Preset:
    """L2 pull towards the weights before each task (the pre-trained weights for the first)."""
    return Preset(plugins=[L2Plugin(strength)])
