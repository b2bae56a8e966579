"""Importance maps at rest: one safetensors file, tensor names = parameter names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor


def save_importances(
    path: str | Path, scores: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``scores`` (kept in their dtype, e.g. bf16) to ``path`` as safetensors."""
    save_file(
        {name: s.detach().contiguous().cpu() for name, s in scores.items()},
        str(path),
        metadata=dict(metadata) if metadata else None,
    )


def load_importances(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    """Read a map written by ``save_importances``."""
    return load_file(str(path), device=device)
