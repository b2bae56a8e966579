"""DARE, Drop And REscale (Yu et al., ICML 2024, "Language Models are Super Mario: Absorbing
Abilities from Homologous Models as a Free Lunch")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cltune.merging._common import as_generator, check_deltas, check_density, weight_vector
from cltune.merging.ties import SignMethod, check_sign_method


def drop_and_rescale(delta: Tensor, density: float, rng: torch.Generator | int | None = None) -> Tensor:
    """``δ̃ = (m ⊙ δ) / (1 − p)`` with ``m ~ Bernoulli(1 − p)`` per entry, ``p = 1 − density``.

    The mask is one ``torch.bernoulli`` draw of ``delta``'s shape and dtype from ``rng``
    (``None``: torch's global RNG). ``density = 1`` returns ``delta`` and draws nothing. cltune
    draws it itself because PEFT's ``random_pruning`` takes no generator (global RNG only).
    """
    check_density(density)
    if density == 1.0:
        return delta
    generator = as_generator(rng, delta.device)
    keep = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    return delta * keep / density


def _dropped(deltas: Sequence[Tensor], density: float, rng: torch.Generator | int | None) -> list[Tensor]:
    check_deltas(deltas)
    generator = as_generator(rng, deltas[0].device)
    return [drop_and_rescale(delta, density, generator) for delta in deltas]


def dare_linear_merge(
    deltas: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    *,
    density: float = 0.1,
    rng: torch.Generator | int | None = None,
) -> Tensor:
    """DARE then task arithmetic: ``τ_m = Σ_t w_t δ̃_t``.

    ``density = 1 − p``; the default ``p = 0.9`` is the paper's headline drop rate. Masks are
    drawn task by task, in order, from one generator (``rng``: a generator, a seed, or ``None``
    for torch's global RNG, which makes the result equal PEFT's ``dare_linear`` after the same
    ``torch.manual_seed``); the sum is PEFT's ``merge_utils.task_arithmetic``.
    """
    from peft.utils import merge_utils

    return merge_utils.task_arithmetic(_dropped(deltas, density, rng), weight_vector(weights, deltas))


def dare_ties_merge(
    deltas: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    *,
    density: float = 0.1,
    majority_sign_method: SignMethod = "total",
    rng: torch.Generator | int | None = None,
) -> Tensor:
    """DARE in place of TIES's trim: sign election and disjoint mean over the ``δ̃_t``.

    Same ``density``/``rng`` conventions as :func:`dare_linear_merge`, same sign election and
    weighting as :func:`cltune.merging.ties.ties_merge` (PEFT's ``calculate_majority_sign_mask``
    and ``disjoint_merge``).
    """
    from peft.utils import merge_utils

    check_sign_method(majority_sign_method)
    dropped = torch.stack(_dropped(deltas, density, rng))
    agree = merge_utils.calculate_majority_sign_mask(dropped, majority_sign_method)
    weighted = dropped * merge_utils.reshape_weight_task_tensors(dropped, weight_vector(weights, deltas))
    return merge_utils.disjoint_merge(weighted, agree)
