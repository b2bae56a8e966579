"""Importance-mask: update only the top ``ratio`` entries by an importance chosen by name.

The selective-tuning recipe of the survey (Huang et al. 2025, "Keeping Yourself is Important in
Downstream Tuning Multimodal Large Language Models", §3.1), over any registered importance that
needs only the model and the experience's batches
(:mod:`cltune.strategies.plugins.importance_mask`).
"""

from __future__ import annotations

from cltune.strategies.plugins.importance_mask import importance_mask_preset
from cltune.strategies.registry import Preset, register


@register("importance-mask")
def importance_mask(
    importance: str = "fisher",
    ratio: float | str = 0.1,
    granularity: str = "tensor",
    calibration_batches: int | None = None,
) -> Preset:
    """Update only the top-ratio entries by a chosen importance (gradient, fisher, mas, magnitude, ...)."""
    return importance_mask_preset("importance-mask", importance, ratio, granularity, calibration_batches)
