"""Model-input batches from a task, for the analyses that run the model (importance, CKA)."""

from __future__ import annotations

from typing import Any

import torch

from cltune.data.encode import Encoder, collate
from cltune.data.task import Task

SPLITS = ("train", "test")


def task_batches(
    task: Task,
    processor: Any,
    *,
    split: str = "train",
    n_examples: int = 64,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> list[dict[str, torch.Tensor]]:
    """The first ``n_examples`` rows of ``task``'s ``split``, encoded as training conversations
    (``labels`` on the answer) by the processor's chat template and padded into batches.

    ``processor`` is a processor or an :class:`~cltune.data.encode.Encoder`. The rows are taken in
    order, so two models analysed with the same arguments see exactly the same inputs.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_examples < 1 or batch_size < 1:
        raise ValueError(f"n_examples and batch_size must be positive, got {n_examples} and {batch_size}")
    data = getattr(task, split)
    if len(data) == 0:
        raise ValueError(f"task {task.name!r} has no {split} rows to analyse")
    encoder = processor if isinstance(processor, Encoder) else Encoder(processor)
    rows = [encoder.encode(data, i, f"{task.name}/{split}", True) for i in range(min(n_examples, len(data)))]
    return [
        {k: v.to(device) for k, v in collate(rows[start : start + batch_size], encoder.pad_id).items()}
        for start in range(0, len(rows), batch_size)
    ]
