"""DARE on full fine-tuning deltas (Yu et al., ICML 2024, "Language Models are Super Mario"): drop each
delta entry with probability p = 1 − density, rescale by 1/(1 − p), then add (``combine="linear"``) or
TIES-merge (``combine="ties"``).

``density = 0.1`` is the paper's headline drop rate p = 0.9; the sum is weighted by λ = 0.5 per task
(as in ``task-arithmetic``, a fixed value, not tuned).
"""

from __future__ import annotations

from collections.abc import Sequence

from cltune.strategies.plugins.task_vector_merge import merge_preset
from cltune.strategies.registry import Preset, register

COMBINES = {"linear": "dare_linear", "ties": "dare_ties"}


@register("dare")
def dare(
    density: float = 0.1,
    combine: str = "linear",
    weights: float | Sequence[float] | None = 0.5,
) -> Preset:
    """Fine-tune each task from the base, evaluate base + DARE(task vectors) (random drop, rescale)."""
    if combine not in COMBINES:
        raise ValueError(f"dare: combine must be one of {sorted(COMBINES)}, got {combine!r}")
    return merge_preset("dare", COMBINES[combine], weights, {"density": density})
