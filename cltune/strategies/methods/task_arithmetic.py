"""Task arithmetic on full fine-tuning deltas (Ilharco et al., ICLR 2023, "Editing Models with Task
Arithmetic"): θ = θ₀ + Σ_t λ_t τ_t after every experience.

The paper picks λ on held-out data; the default λ = 0.5 is a fixed middle value, not tuned (give
one number for every task, or one per task).
"""

from __future__ import annotations

from collections.abc import Sequence

from cltune.strategies.plugins.task_vector_merge import merge_preset
from cltune.strategies.registry import Preset, register


@register("task-arithmetic")
def task_arithmetic(weights: float | Sequence[float] | None = 0.5) -> Preset:
    """Fine-tune each task from the base, evaluate base + λ·Σ task vectors (λ = weights)."""
    return merge_preset("task-arithmetic", "task_arithmetic", weights, {})
