"""Teacher-forced scoring of text: the model's next-token accuracy on held-out passages.

Tasks whose metric is in :data:`cltune.evaluation.metrics.LIKELIHOOD_METRICS` are scored from one
forward pass per batch instead of generated answers: each test row's ``answer`` is a passage of raw
text (no chat template), and the score is the share of its tokens that the model's greedy
next-token prediction gets right given the true prefix — the accuracy form of held-out perplexity,
WikiText's measure of a language model (Merity et al., "Pointer Sentinel Mixture Models", ICLR 2017).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from cltune.data.encode import collate
from cltune.data.task import Task
from cltune.evaluation.generate import plugin_generation_kwargs

MAX_TOKENS = 256  # passages are truncated to this many tokens


@torch.no_grad()
def token_accuracy(strategy, task: Task, progress: bool = True) -> tuple[float, list[str]]:
    """Percent of passage tokens (after each row's first) predicted right, pooled over the test split.

    Also returns, per row, the model's predictions decoded (what it would have said at each
    position), for the run's prediction files.
    """
    tokenizer, model, size = strategy.encoder.tokenizer, strategy.model, strategy.config.eval_batch_size
    texts = task.test["answer"]
    rows = [tokenizer(text, truncation=True, max_length=MAX_TOKENS, return_tensors="pt") for text in texts]
    too_short = [i for i, enc in enumerate(rows) if enc["input_ids"].shape[1] < 2]
    if too_short:
        raise ValueError(f"task {task.name!r}: rows {too_short} have fewer than two tokens to score")
    correct = total = 0
    predictions: list[str] = []
    model.eval()
    batches = range(0, len(rows), size)
    for start in tqdm(batches, desc=f"eval {task.name}", unit="batch", disable=not progress, leave=False):
        index = list(range(start, min(start + size, len(rows))))
        features = [{k: rows[i][k] for k in ("input_ids", "attention_mask")} for i in index]
        padded = collate(features, strategy.encoder.pad_id)  # right-padded
        ids, mask = padded["input_ids"], padded["attention_mask"]
        batch = strategy.to_device(padded)
        with strategy.autocast():
            logits = model(**batch, **plugin_generation_kwargs(strategy, task, index)).logits
        predicted = logits[:, :-1].argmax(-1).cpu()
        scored = mask[:, 1:].bool()
        correct += int(((predicted == ids[:, 1:]) & scored).sum())
        total += int(scored.sum())
        predictions += [tokenizer.decode(predicted[j][scored[j]]) for j in range(len(index))]
    return 100.0 * correct / total, predictions
