"""Masks at rest: 1 bit per parameter, in a safetensors file that records the shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .masks import Masks

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
_SHAPES_KEY = "cltune.mask_shapes"


def pack_bits(mask: Tensor) -> Tensor:
    """Flatten a bool mask into uint8 bytes, 8 entries per byte, first entry in the high bit."""
    flat = mask.detach().reshape(-1).to(device="cpu", dtype=torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % 8))
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Inverse of ``pack_bits``: the bool mask of ``shape``."""
    numel = int(torch.Size(shape).numel())
    bits = packed.to(torch.uint8).reshape(-1, 1).bitwise_and(_BIT_WEIGHTS) > 0
    return bits.reshape(-1)[:numel].reshape(shape)


def save_masks(path: str | Path, masks: Mapping[str, Tensor]) -> None:
    """Write ``masks`` packed to 1 bit per entry; the shapes go in the file's metadata."""
    shapes = {name: list(m.shape) for name, m in masks.items()}
    save_file(
        {name: pack_bits(m) for name, m in masks.items()},
        str(path),
        metadata={_SHAPES_KEY: json.dumps(shapes)},
    )


def load_masks(path: str | Path, device: str | torch.device = "cpu") -> Masks:
    """Read masks written by ``save_masks`` back into bool tensors of their original shapes."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if _SHAPES_KEY not in metadata:
            raise ValueError(f"{path} was not written by save_masks (no mask shapes recorded)")
        shapes = json.loads(metadata[_SHAPES_KEY])
        return {
            name: unpack_bits(f.get_tensor(name), tuple(shape)).to(device) for name, shape in shapes.items()
        }
