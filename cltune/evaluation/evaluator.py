"""Evaluate a strategy's model on tasks, calling the evaluation hooks of its plugins."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from cltune.data.task import Task
from cltune.evaluation.generate import generate_answers
from cltune.evaluation.likelihood import token_accuracy
from cltune.evaluation.metrics import CORPUS_METRICS, LIKELIHOOD_METRICS, get_metric
from cltune.evaluation.reuse import EvalReuse


@dataclass
class TaskScore:
    task: str
    metric: str
    score: float  # 0–100
    predictions: list[str]


def score_predictions(task: Task, predictions: list[str]) -> float:
    """Mean metric over the test split, in percent (a corpus metric: its score of the whole split × 100)."""
    metric = get_metric(task.metric)
    columns = task.test.column_names
    extras = {c: task.test[c] for c in ("choices", "answers") if c in columns}
    if task.metric in CORPUS_METRICS:
        references = extras.get("answers") or [[a] for a in task.test["answer"]]
        return 100.0 * metric(predictions, references)
    scores = [
        metric(pred, ref, **{c: values[i] for c, values in extras.items()})
        for i, (pred, ref) in enumerate(zip(predictions, task.test["answer"], strict=True))
    ]
    return 100.0 * sum(scores) / len(scores)


def score_task(strategy, task: Task, progress: bool = True) -> tuple[float, list[str]]:
    """``task``'s score and per-row predictions under ``strategy.model``."""
    if task.metric in LIKELIHOOD_METRICS:
        return token_accuracy(strategy, task, progress)
    predictions = generate_answers(strategy, task, progress)
    return score_predictions(task, predictions), predictions


def evaluate(
    strategy, tasks: list[Task], progress: bool = True, reuse: EvalReuse | None = None
) -> list[TaskScore]:
    """Score ``strategy.model`` on each task's test split (before_eval … after_eval hooks).

    With ``reuse`` (one per run), a task whose answers cannot have changed since its last
    evaluation gets that evaluation's result (:mod:`cltune.evaluation.reuse`).
    """
    strategy.call("before_eval")
    if reuse is not None:
        reuse.begin_pass()
    results = []
    for task in tasks:
        strategy.eval_task = task
        strategy.call("before_eval_exp")
        compute = partial(score_task, strategy, task, progress)
        score, predictions = reuse.result(strategy, task, compute) if reuse else compute()
        results.append(TaskScore(task.name, task.metric, score, predictions))
        strategy.call("after_eval_exp")
    strategy.eval_task = None
    strategy.call("after_eval")
    return results
