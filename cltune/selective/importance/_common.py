"""Shared plumbing for the importance measures: scope checks, gradients per batch, output dtype."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

Batch = Mapping[str, Tensor]
Params = Mapping[str, nn.Parameter]
Scores = dict[str, Tensor]


def require_params(params: Params) -> None:
    """Raise if the trainable scope is empty: there would be nothing to score."""
    if not params:
        raise ValueError(
            "cannot compute an importance for an empty parameter scope: "
            "`params` holds no trainable parameters"
        )


def finish(scores: Mapping[str, Tensor], dtype: torch.dtype | None) -> Scores:
    """Detach the scores and cast them to ``dtype`` (float32 when None; bf16 halves the memory)."""
    return {name: s.detach().to(dtype or torch.float32) for name, s in scores.items()}


@contextmanager
def scoring_mode(model: nn.Module, params: Params) -> Iterator[None]:
    """Eval mode (no dropout), autograd on, ``params`` differentiable; all restored on exit."""
    was_training = model.training
    flags = {name: p.requires_grad for name, p in params.items()}
    model.eval()
    for p in params.values():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        model.train(was_training)
        for name, p in params.items():
            p.requires_grad_(flags[name])


def task_loss(model: nn.Module, batch: Batch) -> Tensor:
    """The answer-token cross-entropy the model computes from the batch's ``labels``."""
    loss = model(**batch).loss
    if loss is None:
        raise ValueError("the model returned no loss: the batch needs `labels`")
    return loss


def batch_gradients(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    objective: Callable[[nn.Module, Batch], Tensor] = task_loss,
) -> Iterator[dict[str, Tensor]]:
    """Yield, for each batch, ∂objective/∂θ for every name in ``params`` (float32).

    Uses ``torch.autograd.grad``, so the ``.grad`` fields of the model are left untouched.
    A parameter the objective does not reach gets a zero gradient.
    """
    require_params(params)
    names, tensors = list(params), list(params.values())
    seen = 0
    with scoring_mode(model, params):
        for batch in batches:
            grads = torch.autograd.grad(objective(model, batch), tensors, allow_unused=True)
            seen += 1
            yield {
                name: torch.zeros_like(t, dtype=torch.float32) if g is None else g.float()
                for name, t, g in zip(names, tensors, grads, strict=True)
            }
    if seen == 0:
        raise ValueError("no batches were given to estimate the importance from")
