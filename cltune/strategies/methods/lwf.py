"""Learning without Forgetting: distil the model before the experience into the one being trained.

Li & Hoiem, ECCV 2016 / TPAMI 2018, "Learning without Forgetting": L = L_new + α·L_old, L_old
the distillation loss at temperature T (Hinton et al. 2015, "Distilling the Knowledge in a
Neural Network") between the old model's and the current model's outputs on the new data.
For a causal LM the outputs are the next-token distributions at the answer positions (where
the next label is not −100): L_old = T² · mean over those tokens of
KL(softmax(z_old/T) ‖ softmax(z/T)). The old model is the model at the start of the
experience (for the first one, the pre-trained model); it is run by swapping a float copy of
the trainable weights into the same module (``torch.func.functional_call``), so the extra
memory is one copy of the trainable scope, not of the whole model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from cltune.data.encode import IGNORE_INDEX
from cltune.strategies.calibration import scope_params, snapshot
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.penalties import check_strength
from cltune.strategies.registry import Preset, register


def answer_distillation(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """T² · mean over answer positions of KL(softmax(teacher/T) ‖ softmax(student/T)), in float32.

    ``student``/``teacher`` are (batch, seq, vocab) logits, ``labels`` (batch, seq); position t
    is an answer position when ``labels[:, t + 1]`` is not −100 (it predicts an answer token).
    """
    answer = labels[:, 1:] != IGNORE_INDEX
    if not bool(answer.any()):
        return student.sum() * 0.0
    s = F.log_softmax(student[:, :-1][answer].float() / temperature, dim=-1)
    t = F.log_softmax(teacher[:, :-1][answer].float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class LwFPlugin(Plugin):
    full_parameters = "it snapshots whole parameters and runs the teacher through torch.func.functional_call"

    def __init__(self, alpha: float, temperature: float):
        self.alpha = alpha
        self.temperature = temperature
        self._teacher: dict[str, Tensor] = {}

    def before_training_exp(self, strategy) -> None:
        self._teacher = snapshot(scope_params(strategy, "lwf"))

    @torch.no_grad()
    def _teacher_logits(self, strategy) -> Tensor:
        inputs = {k: v for k, v in strategy.mbatch.items() if k != "labels"}
        was_training = strategy.model.training
        strategy.model.eval()
        try:
            return functional_call(strategy.model, self._teacher, args=(), kwargs=inputs).logits
        finally:
            strategy.model.train(was_training)

    def before_backward(self, strategy) -> None:
        if self.alpha == 0.0:
            return
        teacher = self._teacher_logits(strategy)
        loss = answer_distillation(
            strategy.mb_output.logits, teacher, strategy.mbatch["labels"], self.temperature
        )
        strategy.loss = strategy.loss + self.alpha * loss

    def after_training_exp(self, strategy) -> None:
        self._teacher = {}


@register("lwf")
def lwf(alpha: float = 1.0, temperature: float = 2.0) -> Preset:
    """Learning without Forgetting: KL-distil the model before each task on the answer tokens."""
    check_strength("lwf", "alpha", alpha)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"lwf: temperature must be a number > 0, got {temperature!r}")
    return Preset(plugins=[LwFPlugin(float(alpha), float(temperature))])
