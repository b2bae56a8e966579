"""Half Fine-Tuning: freeze a random half of the weight matrices of every layer.

Hui et al., "HFT: Half Fine-Tuning for Large Language Models" (arXiv:2404.18466, ACL 2025).
Whole matrices are frozen, so a template may equally set ``requires_grad=False`` on the
frozen ones instead of masking them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch
from torch import Tensor

from .masks import Masks, check_ratio, layer_of


def _block(name: str) -> str:
    """The sub-block of a layer a matrix belongs to: attention, MLP, or other."""
    lowered = name.lower()
    if "attn" in lowered or "attention" in lowered:
        return "attention"
    if "mlp" in lowered or "ffn" in lowered or "feed_forward" in lowered:
        return "mlp"
    return "other"


def hft_select(params: Mapping[str, Tensor], ratio: float = 0.5, seed: int = 0) -> set[str]:
    """Names of the weight matrices that are trained; the other matrices are frozen.

    HFT selects at category level: within each layer, the matrices of each sub-block
    (attention: q/k/v/o; MLP: gate/up/down) are shuffled and ``ratio`` of them are trained.
    When ratio·n is fractional (3 MLP matrices at 0.5) the count is its floor or ceiling,
    drawn so that its expectation is ratio·n. The matrices outside any layer (embeddings,
    ``lm_head``) form one more group. Only 2-D tensors take part: vectors (norms, biases) are
    not selected here, and ``hft_masks`` keeps them trainable. Reproducible from ``seed``.
    """
    check_ratio(ratio)
    rng = random.Random(seed)
    groups: dict[tuple[str | None, str], list[str]] = {}
    for name in sorted(params):
        if params[name].dim() == 2:
            groups.setdefault((layer_of(name), _block(name)), []).append(name)
    trained: set[str] = set()
    for key in sorted(groups, key=str):
        names = groups[key]
        expected = ratio * len(names)
        count = int(expected) + (rng.random() < expected - int(expected))
        trained.update(rng.sample(names, count))
    return trained


def hft_masks(params: Mapping[str, Tensor], ratio: float = 0.5, seed: int = 0) -> Masks:
    """Whole-tensor masks for ``hft_select``: all True for trained matrices and for vectors."""
    trained = hft_select(params, ratio, seed)
    return {
        name: torch.full(p.shape, name in trained or p.dim() != 2, dtype=torch.bool, device=p.device)
        for name, p in params.items()
    }
