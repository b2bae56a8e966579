"""Parameter drift between the fine-tuned and the pre-trained weights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ._common import Batch, Params, Scores, finish, require_params


def drift(
    model: nn.Module | None,
    params: Params,
    batches: Iterable[Batch] | None = None,
    *,
    pretrained: Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
) -> Scores:
    """I = |θ_ft − θ_pre|, with ``params`` the fine-tuned weights; data-free.

    The selection criterion of Lottery-Ticket Sparse Fine-Tuning (LT-SFT; Ansell et al., ACL
    2022, "Composable Sparse Fine-Tuning for Cross-Lingual Transfer") and the salience of
    Model Tailor (Zhu et al., ICML 2024, "Model Tailor: Mitigating Catastrophic Forgetting in
    Multi-modal Large Language Models"). ``model`` and ``batches`` are unused.
    """
    require_params(params)
    missing = [name for name in params if name not in pretrained]
    if missing:
        raise ValueError(f"`pretrained` lacks {len(missing)} parameter(s), e.g. {missing[0]!r}")
    return finish(
        {
            name: (p.detach().float() - pretrained[name].to(p.device).float()).abs()
            for name, p in params.items()
        },
        dtype,
    )
