"""Importance masks: update only the top ``ratio`` entries by an importance measured on the task.

The selective-tuning recipe of the survey (Huang et al. 2025, "Keeping Yourself is Important in
Downstream Tuning Multimodal Large Language Models", §3.1): at the start of each experience
score every trainable entry with an importance from the registry
(:mod:`cltune.selective.importance`) that needs only the model and batches — ``gradient`` (GMT),
``fisher`` (EWC's diagonal Fisher), ``mas`` (output-norm sensitivity), ``magnitude``, or one a
user registered — on the experience's own training batches, keep the top ``ratio`` entries (per
tensor, layer or globally; ``"auto"`` reads the ratio off the importance distribution,
:mod:`cltune.selective.auto_ratio`), and let AdamW change only those, exactly. Importances are
kept in bf16 while the mask is chosen. Shared by the presets ``importance-mask`` and ``gmt``.
"""

from __future__ import annotations

import torch
from torch import nn

from cltune.selective import get_importance, importance_measure, importance_names, topk_masks
from cltune.selective.auto_ratio import auto_ratio
from cltune.selective.masks import Granularity, Masks
from cltune.strategies.calibration import experience_importance
from cltune.strategies.plugins.masks import MaskPlugin, check_mask_options
from cltune.strategies.registry import Preset
from cltune.utils import unknown_name_error


class ImportanceMaskPlugin(MaskPlugin):
    def __init__(
        self,
        importance: str,
        ratio: float | str,
        granularity: Granularity,
        calibration_batches: int | None,
        method: str,
    ):
        super().__init__()
        self.importance = importance
        self.ratio = ratio
        self.granularity = granularity
        self.calibration_batches = calibration_batches
        self.method = method

    def choose_masks(self, strategy, params: dict[str, nn.Parameter]) -> tuple[Masks, dict[str, float]]:
        measure = get_importance(self.importance)
        scores = experience_importance(
            strategy, measure, params, self.calibration_batches, self.method, dtype=torch.bfloat16
        )
        ratio = auto_ratio(scores) if self.ratio == "auto" else float(self.ratio)
        return topk_masks(scores, ratio, self.granularity), {"ratio": ratio}


def importance_mask_preset(
    method: str, importance: str, ratio: float | str, granularity: str, calibration_batches: int | None
) -> Preset:
    """The preset of a mask strategy, after checking every option (clear errors)."""
    usable = importance_names(lambda measure: measure.mask_obstacle() is None)
    try:
        obstacle = importance_measure(importance).mask_obstacle()
    except ValueError:
        raise unknown_name_error(f"{method} importance measure", importance, usable) from None
    if obstacle is not None:
        raise ValueError(
            f"{method}: importance {importance!r} cannot choose a mask before training ({obstacle}); "
            f"use one of {', '.join(usable)} (or the strategies spider, lt-sft, model-tailor, si)"
        )
    check_mask_options(method, ratio, granularity)
    if calibration_batches is not None and (isinstance(calibration_batches, bool) or calibration_batches < 1):
        raise ValueError(
            f"{method}: calibration_batches must be a positive integer or None (all batches), "
            f"got {calibration_batches!r}"
        )
    return Preset(plugins=[ImportanceMaskPlugin(importance, ratio, granularity, calibration_batches, method)])
