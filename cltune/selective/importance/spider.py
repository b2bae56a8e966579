"""SPIDER: importance discrepancy between pre-training and fine-tuning, and its weight rule.

Huang et al., ICML 2025, "Learn from Downstream and Be Yourself in Multimodal Large Language
Models Fine-Tuning" (arXiv:2411.10928): Specialization via Importance Discrepancy Evaluation
for Refinement. Per tensor, the pre-training importance is the frozen weight magnitude and the
fine-tuning importance the accumulated gradient magnitude; each entry moves from θ_pre towards
the fine-tuned value by its share c of the two. The rules follow the authors' code
(WenkeHuang/SPIDER, commit 197c934, ``Code/train/SPIDER.py``: ``calculate_rank`` and the
``challenge_rank`` step), edge cases included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ._common import Batch, Params, Scores, batch_gradients, finish
from .gradient import accumulate_


def spider_importance(x: Tensor) -> Tensor:
    """σ((|x| − mean|x|) / std|x|) within the tensor, float32: the reference's ``calculate_rank``.

    The std is unbiased (``torch.std``). An all-zero tensor (LoRA B at init, a zero gradient)
    maps to 0, the reference's special case, so that nothing is less important than it. A
    constant non-zero tensor gives NaN (0/0), as in the reference; NaN never wins the comparison
    in :func:`spider_share`, so none of the tensor's entries move.
    """
    x = x.detach().float()
    if not bool(x.any()):
        return torch.zeros_like(x)
    magnitude = x.abs()
    return torch.sigmoid((magnitude - magnitude.mean()) / magnitude.std())


def spider_share(pretrained: Tensor, grad_sum: Tensor) -> Tensor:
    """Update share c of one tensor, in [0, 1] (float32).

    I_pre = ``spider_importance(θ_pre)`` and I_ft = ``spider_importance(ΣG)``;
    c = I_ft / (I_pre + I_ft) where I_pre < I_ft, else 0; then c is divided by the mean of its
    non-zero entries and capped at 1. So an all-zero θ_pre (and a non-zero ΣG) gives c = 1
    everywhere, and an all-zero ΣG gives c = 0 everywhere.
    """
    i_pre = spider_importance(pretrained)
    i_ft = spider_importance(grad_sum)
    share = torch.where(i_pre < i_ft, i_ft / (i_pre + i_ft), torch.zeros_like(i_ft))
    nonzero = share != 0
    if not bool(nonzero.any()):
        return share
    return (share / share[nonzero].mean()).clamp_(max=1.0)


def spider_shares(pretrained: Mapping[str, Tensor], grad_sum: Mapping[str, Tensor]) -> Scores:
    """``spider_share`` for every name in ``grad_sum``."""
    return {name: spider_share(pretrained[name], g) for name, g in grad_sum.items()}


@torch.no_grad()
def spider_merge_(params: Params, pretrained: Mapping[str, Tensor], shares: Mapping[str, Tensor]) -> None:
    """θ ← θ_pre·(1 − c) + θ·c in place, for every name in ``shares``.

    Computed as lerp(θ, θ_pre, 1 − c) in float32, which is exactly θ_pre where c = 0 and
    exactly θ where c = 1. Call it after each optimizer step (``after_update``).
    """
    for name, c in shares.items():
        p = params[name]
        merged = torch.lerp(p.float(), pretrained[name].to(p.device).float(), 1.0 - c.to(p.device))
        p.copy_(merged)


def spider(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    pretrained: Mapping[str, Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Scores:
    """SPIDER update share c from |θ_pre| and the task gradient summed over ``batches``.

    ``pretrained`` defaults to the current ``params`` (scoring before fine-tuning). During
    training SPIDER recomputes c every step from the running ΣG (see ``spider_share``).
    """
    total: dict[str, Tensor] = {}
    for grads in batch_gradients(model, params, batches):
        accumulate_(total, grads)
    reference = pretrained if pretrained is not None else params
    return finish(spider_shares(reference, total), dtype)
