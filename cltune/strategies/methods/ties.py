"""TIES-merging of full fine-tuning deltas (Yadav et al., NeurIPS 2023): trim each task vector to its
top-``density`` magnitudes, elect a sign per entry, average the agreeing entries."""

from __future__ import annotations

from collections.abc import Sequence

from cltune.strategies.plugins.task_vector_merge import merge_preset
from cltune.strategies.registry import Preset, register


@register("ties")
def ties(
    density: float = 0.2,
    weights: float | Sequence[float] | None = None,
    majority_sign_method: str = "total",
) -> Preset:
    """Fine-tune each task from the base, evaluate base + TIES(task vectors)."""
    options = {"density": density, "majority_sign_method": majority_sign_method}
    return merge_preset("ties", "ties", weights, options)
