"""Evaluate a strategy's model on tasks, calling the evaluation hooks of its plugins."""

from __future__ import annotations

from dataclasses import dataclass

from cltune.data.task import Task
from cltune.evaluation.generate import generate_answers
from cltune.evaluation.metrics import get_metric


@dataclass
class TaskScore:
    task: str
    metric: str
    score: float  # 0–100
    predictions: list[str]


def score_predictions(task: Task, predictions: list[str]) -> float:
    """Mean metric over the test split, in percent."""
    metric = get_metric(task.metric)
    columns = task.test.column_names
    extras = {c: task.test[c] for c in ("choices", "answers") if c in columns}
    scores = [
        metric(pred, ref, **{c: values[i] for c, values in extras.items()})
        for i, (pred, ref) in enumerate(zip(predictions, task.test["answer"], strict=True))
    ]
    return 100.0 * sum(scores) / len(scores)


def evaluate(strategy, tasks: list[Task], progress: bool = True) -> list[TaskScore]:
    """Score ``strategy.model`` on each task's test split (before_eval … after_eval hooks)."""
    strategy.call("before_eval")
    results = []
    for task in tasks:
        strategy.eval_task = task
        strategy.call("before_eval_exp")
        predictions = generate_answers(strategy, task, progress)
        results.append(TaskScore(task.name, task.metric, score_predictions(task, predictions), predictions))
        strategy.call("after_eval_exp")
    strategy.eval_task = None
    strategy.call("after_eval")
    return results
