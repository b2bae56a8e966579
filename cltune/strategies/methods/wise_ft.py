"""WiSE-FT on full fine-tuning deltas (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot
models"): θ = (1 − α) θ₀ + α · θ_ft, with θ_ft the uniform soup of the models fine-tuned so far."""

from __future__ import annotations

from collections.abc import Sequence

from cltune.strategies.plugins.task_vector_merge import merge_preset
from cltune.strategies.registry import Preset, register


@register("wise-ft")
def wise_ft(alpha: float = 0.5, weights: float | Sequence[float] | None = None) -> Preset:
    """Fine-tune each task from the base, evaluate the base interpolated with their soup by α."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise-ft: alpha must lie in [0, 1] (0 = base, 1 = fine-tuned), got {alpha}")
    return merge_preset("wise-ft", "wise_ft", weights, {"alpha": alpha})
