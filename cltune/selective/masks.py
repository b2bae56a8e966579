"""Masks from importance scores: the top ``ratio`` entries per tensor, per layer or globally.

A mask is a bool tensor shaped like its parameter; True marks an entry that is updated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

Granularity = Literal["tensor", "layer", "global"]
Masks = dict[str, Tensor]

_LAYER = re.compile(r"^(.*?\.(?:layers|layer|h|blocks|block)\.\d+)\.")


def check_ratio(ratio: float) -> None:
    """Raise unless 0 < ratio ≤ 1."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")


def layer_of(name: str) -> str | None:
    """The transformer layer a parameter belongs to, as its name prefix up to the index.

    ``model.language_model.layers.3.mlp.up_proj.weight`` → ``model.language_model.layers.3``;
    the prefix (not the bare index) keeps layer 3 of two towers apart. None outside layers.
    """
    match = _LAYER.match(name)
    return match.group(1) if match else None


def n_keep(ratio: float, numel: int) -> int:
    """Number of entries kept out of ``numel``: the nearest integer to ratio·numel."""
    return int(ratio * numel + 0.5)


def _top_k(scores: list[Tensor], k: int) -> list[Tensor]:
    """Bool masks of exactly the k largest entries across ``scores`` (ties: first positions)."""
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    if bool(flat.isnan().any()):
        raise ValueError("importance scores contain NaN")
    n = flat.numel()
    if k >= n:
        keep = torch.ones(n, dtype=torch.bool, device=flat.device)
    elif k == 0:
        keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    else:
        threshold = flat.kthvalue(n - k + 1).values
        keep = flat > threshold
        ties = (flat == threshold).nonzero().squeeze(1)
        keep[ties[: k - int(keep.sum())]] = True
    parts = keep.split([s.numel() for s in scores])
    return [m.view(s.shape) for m, s in zip(parts, scores, strict=True)]


def topk_masks(scores: Mapping[str, Tensor], ratio: float, granularity: Granularity = "tensor") -> Masks:
    """Keep the top ``ratio`` entries by score, counted within each group.

    ``granularity``: ``"tensor"`` (each parameter on its own), ``"layer"`` (all parameters of
    a transformer layer together, see ``layer_of``; the parameters outside any layer form one
    group), or ``"global"`` (everything together; needs a temporary float32 copy of all
    scores). Each group keeps exactly ``n_keep(ratio, group size)`` entries.
    """
    check_ratio(ratio)
    if granularity not in ("tensor", "layer", "global"):
        raise ValueError(f"granularity must be 'tensor', 'layer' or 'global', got {granularity!r}")
    groups: dict[str | None, list[str]] = {}
    for name in scores:
        key = {"tensor": name, "layer": layer_of(name), "global": None}[granularity]
        groups.setdefault(key, []).append(name)
    masks: Masks = {}
    for names in groups.values():
        tensors = [scores[n] for n in names]
        k = n_keep(ratio, sum(t.numel() for t in tensors))
        masks.update(zip(names, _top_k(tensors, k), strict=True))
    return {name: masks[name] for name in scores}


def random_masks(
    params: Mapping[str, Tensor],
    ratio: float,
    seed: int = 0,
    granularity: Granularity = "tensor",
) -> Masks:
    """The random control: exactly as many entries as ``topk_masks`` keeps, drawn uniformly.

    Reproducible from ``seed`` (a CPU generator, independent of the global RNG and device).
    """
    generator = torch.Generator().manual_seed(seed)
    scores = {name: torch.rand(p.shape, generator=generator).to(p.device) for name, p in params.items()}
    return topk_masks(scores, ratio, granularity)
