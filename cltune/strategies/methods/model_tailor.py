"""Model Tailor: fine-tune, then keep only a sparse, compensated patch of the delta.

Zhu et al., ICML 2024, "Model Tailor: Mitigating Catastrophic Forgetting in Multi-modal Large
Language Models" (arXiv:2402.12048). Each experience is a plain fine-tune of the scope; at its
end every Linear weight is patched as the authors' code does (:func:`cltune.selective.tailor.
tailor_patch`: per 128-column block, the top ``ratio`` entries by 0.8·z(|Δ|) + 0.2·z(W²/U_jj²)
are kept, the rest reset to θ_pre, the kept ones compensated as ``compensate`` says), with the
layer-input Hessians of ``calibration_batches`` batches of the experience's own training data
run through the fine-tuned model, all layers in one pass. The other tensors of the scope (norms,
embeddings), which the reference leaves fine-tuned, keep their top ``ratio`` entries by |Δ|, so
the whole scope is a sparse patch. θ_pre is the model at the start of each experience.
Deviations from the reference: ``docs/FAITHFULNESS.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cltune.selective import topk_masks
from cltune.selective.importance.obs import layer_hessians
from cltune.selective.tailor import Compensation, check_compensation, tailor_patch
from cltune.strategies.calibration import scope_params, snapshot
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.masks import MaskRecorder, check_mask_options
from cltune.strategies.registry import Preset, register


class ModelTailorPlugin(Plugin):
    full_parameters = "it patches whole parameters from Hessians after every experience"

    def __init__(self, ratio: float, calibration_batches: int, compensate: Compensation):
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
        masks = {}
        for name, p in params.items():
            pre = self._pre[name]
            if name in hessians:
                patched, masks[name] = tailor_patch(p, pre, hessians[name][1], self.ratio, self.compensate)
            else:
                masks[name] = topk_masks({name: (p.detach() - pre).abs()}, self.ratio)[name]
                patched = torch.where(masks[name], p, pre)
            p.copy_(patched)
        self._pre = {}
        self.recorder.record(strategy, masks, ratio=self.ratio)

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state)


@register("model-tailor")
def model_tailor(ratio: float = 0.1, calibration_batches: int = 8, compensate: str = "reference") -> Preset:
    """Model Tailor: fine-tune, keep the top-ratio patch of the delta (fused score), compensate it.

    ``compensate``: ``"reference"`` (the authors' update), ``"exact"`` (least-squares OBS) or
    ``"none"``; see :data:`cltune.selective.tailor.COMPENSATIONS`.
    """
    check_mask_options("model-tailor", ratio, "tensor", allow_auto=False)
    check_compensation("model-tailor", compensate)
    if calibration_batches < 1:
        raise ValueError(
            f"model-tailor: calibration_batches must be a positive integer, got {calibration_batches}"
        )
    return Preset(plugins=[ModelTailorPlugin(float(ratio), calibration_batches, compensate)])
