"""Model Tailor: fine-tune, then keep only a sparse, compensated patch of the delta.

Zhu et al., ICML 2024, "Model Tailor: Mitigating Catastrophic Forgetting in Multi-modal Large
Language Models" (arXiv:2402.12048). Each experience is a plain fine-tune of the scope; at its
end the delta Δ = θ_ft − θ_pre is cut to the top ``ratio`` entries per tensor by
0.8·z(salience) + 0.2·z(sensitivity), every other entry is reset to θ_pre, and the kept entries
of the Linear weights are compensated by OBS on the layer-input Hessian of ``calibration_batches``
batches of the experience's own training data run through the fine-tuned model
(:mod:`cltune.selective.tailor`). θ_pre is the model at the start of each experience.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cltune.selective import topk_masks
from cltune.selective.importance.obs import layer_hessians
from cltune.selective.tailor import obs_compensate, tailor_scores
from cltune.strategies.calibration import scope_params, snapshot
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.masks import MaskRecorder, check_mask_options
from cltune.strategies.registry import Preset, register


class ModelTailorPlugin(Plugin):
    full_parameters = "it patches whole parameters from Hessians after every experience"

    def __init__(self, ratio: float, calibration_batches: int, compensate: bool):
        self.ratio = ratio
        self.calibration_batches = calibration_batches
        self.compensate = compensate
        self.recorder = MaskRecorder()
        self._pre: dict[str, Tensor] = {}

    def before_training_exp(self, strategy) -> None:
        self._pre = snapshot(scope_params(strategy, "model-tailor"))

    @torch.no_grad()
    def after_training_exp(self, strategy) -> None:
        params = scope_params(strategy, "model-tailor")
        batches = strategy.calibration_batches(self.calibration_batches, "model-tailor")
        hessians = layer_hessians(strategy.model, params, batches)
        inverse_diag = {
            name: torch.cholesky_inverse(torch.linalg.cholesky(h)).diagonal()
            for name, (_, h) in hessians.items()
        }
        delta = {name: p.detach() - self._pre[name] for name, p in params.items()}
        masks = topk_masks(tailor_scores(delta, inverse_diag), self.ratio)
        del delta
        for name, p in params.items():
            if self.compensate and name in hessians:
                patched = obs_compensate(p, self._pre[name], masks[name], hessians[name][1])
            else:
                patched = torch.where(masks[name], p, self._pre[name])
            p.copy_(patched)
        self._pre = {}
        self.recorder.record(strategy, masks, ratio=self.ratio)

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state)


@register("model-tailor")
def model_tailor(ratio: float = 0.1, calibration_batches: int = 8, compensate: bool = True) -> Preset:
    """Model Tailor: fine-tune, keep the top-ratio patch of the delta (fused score), OBS-compensate it."""
    check_mask_options("model-tailor", ratio, "tensor", allow_auto=False)
    if calibration_batches < 1:
        raise ValueError(
            f"model-tailor: calibration_batches must be a positive integer, got {calibration_batches}"
        )
    return Preset(plugins=[ModelTailorPlugin(float(ratio), calibration_batches, compensate)])
