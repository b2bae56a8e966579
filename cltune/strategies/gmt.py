"""Gradient-Mask Tuning: update only the entries with the largest accumulated task gradient.

Li et al., AAAI 2025, "Enhancing Large Language Model Performance with Gradient-Based Parameter
Selection" (arXiv:2406.15330). At the start of each experience the task-loss gradient is summed
over the experience's own training batches, I = |Σ_b ∇θ L(θ; B_b)|
(:func:`cltune.selective.importance.gradient`), and the top ``ratio`` entries by I are the only
ones AdamW may change during the experience (exactly; see :class:`MaskedUpdate`).
"""

from __future__ import annotations

import torch
from torch import nn

from cltune.selective import topk_masks
from cltune.selective.auto_ratio import auto_ratio
from cltune.selective.importance import gradient
from cltune.selective.masks import Granularity, Masks
from cltune.strategies.calibration import experience_batches
from cltune.strategies.registry import Preset, register
from cltune.strategies.selective_plugin import MaskPlugin, check_mask_options


class GradientMaskPlugin(MaskPlugin):
    method = "gmt"

    def __init__(self, ratio: float | str, granularity: Granularity, calibration_batches: int | None):
        super().__init__()
        self.ratio = ratio
        self.granularity = granularity
        self.calibration_batches = calibration_batches

    def choose_masks(self, strategy, params: dict[str, nn.Parameter]) -> tuple[Masks, dict[str, float]]:
        batches = experience_batches(strategy, self.calibration_batches, "gmt")
        scores = gradient(strategy.model, params, batches, dtype=torch.bfloat16)
        ratio = auto_ratio(scores) if self.ratio == "auto" else float(self.ratio)
        return topk_masks(scores, ratio, self.granularity), {"ratio": ratio}


@register("gmt")
def gmt(
    ratio: float | str = 0.1, granularity: str = "tensor", calibration_batches: int | None = None
) -> Preset:
    """Gradient-mask tuning: update only the top-ratio entries by the task's accumulated gradient."""
    check_mask_options("gmt", ratio, granularity)
    if calibration_batches is not None and calibration_batches < 1:
        raise ValueError(
            f"gmt: calibration_batches must be a positive integer or None, got {calibration_batches}"
        )
    return Preset(plugins=[GradientMaskPlugin(ratio, granularity, calibration_batches)])
