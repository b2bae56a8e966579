"""Batched greedy generation of answers for a task's test split."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from cltune import distributed
from cltune.data.encode import collate
from cltune.data.task import Task


def answer_token_budget(encoder, task: Task, cap: int) -> int:
    """New tokens to generate: the longest reference answer's length plus end-of-turn, capped."""
    tokenizer = encoder.tokenizer
    answers = tokenizer(list(task.test["answer"]), add_special_tokens=False)["input_ids"]  # one batched call
    longest = max(len(ids) for ids in answers)
    return min(cap, longest + 2)


def plugin_generation_kwargs(strategy, task: Task, rows: list[int]) -> dict:
    """Extra ``generate`` arguments for test rows ``rows`` of ``task`` from the strategy's plugins
    (:meth:`~cltune.strategies.plugin.Plugin.generation_kwargs`, e.g. PEFT's per-row
    ``adapter_names`` to route each row of a mixed batch to its own adapter)."""
    kwargs: dict = {}
    for plugin in strategy.plugins:
        kwargs.update(plugin.generation_kwargs(strategy, task, rows))
    return kwargs


@torch.no_grad()
def generate_answers(strategy, task: Task, progress: bool = True) -> list[str]:
    """Greedy answers to every test question of ``task``, in row order.

    Rows are batched by prompt length (less padding), left-padded, and restored to row order.
    Under several processes each takes every n-th of these batches and the answers are gathered.
    """
    encoder, model, config = strategy.encoder, strategy.model, strategy.config
    features = [encoder.encode(task.test, i, task.name, train=False) for i in range(len(task.test))]
    order = sorted(range(len(features)), key=lambda i: features[i]["input_ids"].shape[1])
    budget = answer_token_budget(encoder, task, config.max_new_tokens)
    answers: dict[int, str] = {}
    model.eval()
    batches = distributed.strided_share(range(0, len(order), config.eval_batch_size))
    for start in tqdm(batches, desc=f"eval {task.name}", unit="batch", disable=not progress, leave=False):
        index = order[start : start + config.eval_batch_size]
        batch = strategy.to_device(collate([features[i] for i in index], encoder.pad_id, left=True))
        with strategy.autocast():
            out = model.generate(
                **batch,
                max_new_tokens=budget,
                do_sample=False,
                pad_token_id=encoder.pad_id,
                **plugin_generation_kwargs(strategy, task, index),
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        for i, text in zip(
            index, encoder.tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
        ):
            answers[i] = text.strip()
    return distributed.gather_rows(answers, len(features))
