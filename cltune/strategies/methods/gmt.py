"""Gradient-Mask Tuning: update only the entries with the largest accumulated task gradient.

Li et al., AAAI 2025, "Enhancing Large Language Model Performance with Gradient-Based Parameter
Selection" (arXiv:2406.15330). At the start of each experience the task-loss gradient is summed
over the experience's own training batches, I = |Σ_b ∇θ L(θ; B_b)|
(:func:`cltune.selective.importance.gradient`), and the top ``ratio`` entries by I are the only
ones AdamW may change during the experience (exactly; see :class:`~cltune.selective.MaskedUpdate`).
GMT re-selects at every update from the gradients of the last interval; here the mask is chosen
once per experience from a full pass, so it can be stored at 1 bit per entry and the step costs
one masked fill of the gradients (the importance-mask plugin,
:mod:`cltune.strategies.plugins.importance_mask`).
"""

from __future__ import annotations

from cltune.strategies.plugins.importance_mask import importance_mask_preset
from cltune.strategies.registry import Preset, register


@register("gmt")
def gmt(
    ratio: float | str = 0.1, granularity: str = "tensor", calibration_batches: int | None = None
) -> Preset:
    """Gradient-mask tuning: update only the top-ratio entries by the task's accumulated gradient."""
    return importance_mask_preset("gmt", "gradient", ratio, granularity, calibration_batches)
