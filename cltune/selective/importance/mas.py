"""Memory Aware Synapses: sensitivity of the output norm."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from cltune.data.encode import IGNORE_INDEX

from ._common import Batch, Params, Scores, batch_gradients, finish


def answer_logits_sq_norm(model: nn.Module, batch: Batch) -> Tensor:
    """Mean over the answer tokens of ‖f_t(x)‖²₂, f_t the logits that predict answer token t.

    A causal LM predicts token t+1 from position t, so the logits kept are those at the
    positions where the *next* label is not ``IGNORE_INDEX`` (the positions the loss reads).
    """
    if "labels" not in batch:
        raise ValueError("MAS needs `labels` in the batch to locate the answer tokens")
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    answer = labels[:, 1:] != IGNORE_INDEX
    if not bool(answer.any()):
        raise ValueError(f"the batch has no answer tokens (all labels are {IGNORE_INDEX})")
    return logits[:, :-1][answer].float().pow(2).sum(-1).mean()


def mas(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    dtype: torch.dtype | None = None,
) -> Scores:
    """Ω = 1/N Σ_b |∂ ℓ₂²(f(x_b)) / ∂θ|, f the output logits on the answer positions.

    Memory Aware Synapses (Aljundi et al., ECCV 2018, "Memory Aware Synapses: Learning what
    (not) to forget"): importance is the magnitude of the gradient of the squared ℓ2 norm of
    the output, averaged over the data; no labels are needed beyond locating the answer.
    Here ℓ₂²(f(x_b)) is the mean, over the answer tokens of batch b, of the squared norm of
    the logit vector, and the absolute value is taken per batch (per example with batch
    size 1, as in the paper).
    """
    total: dict[str, Tensor] = {}
    n = 0
    for grads in batch_gradients(model, params, batches, answer_logits_sq_norm):
        n += 1
        for name, g in grads.items():
            if name in total:
                total[name].add_(g.abs())
            else:
                total[name] = g.abs()
    return finish({name: s / n for name, s in total.items()}, dtype)
