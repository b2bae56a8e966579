"""Weight magnitude of the pre-trained parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ._common import Batch, Params, Scores, finish, require_params


def magnitude(
    model: nn.Module | None,
    params: Params,
    batches: Iterable[Batch] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Scores:
    """I = |θ|, read from the current (pre-trained) weights; data-free.

    The classic pruning saliency (Han et al., NeurIPS 2015, "Learning both Weights and
    Connections for Efficient Neural Networks"); SPIDER uses it as the pre-training importance
    (Huang et al., ICML 2025). ``model`` and ``batches`` are unused and may be None.
    """
    require_params(params)
    return finish({name: p.detach().abs() for name, p in params.items()}, dtype)
