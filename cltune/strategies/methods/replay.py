"""Experience replay: a buffer of earlier samples mixed into each training batch.

Rehearsal in the sense of Rebuffi et al. (iCaRL, CVPR 2017) and Chaudhry et al. (2019,
"On Tiny Episodic Memories in Continual Learning"): the buffer keeps ``buffer_size`` rows split
evenly across the experiences seen so far (the remainder one row each to the first, as Avalanche's
``ExperienceBalancedBuffer``), chosen at random (``selection="random"``) or class-
balanced by answer (``selection="balanced"``); each batch gets ``replay_batch_size`` buffer rows.
Both draws follow the run's seed (``TrainConfig.seed``), so each seed of a multi-seed run replays
its own rows.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import Preset, register

SELECTIONS = ("random", "balanced")


class ReplayPlugin(Plugin):
    full_parameters = None  # it only adds rows to the minibatch

    def __init__(self, buffer_size: int, replay_batch_size: int, selection: str):
        self.buffer_size = buffer_size
        self.replay_batch_size = replay_batch_size
        self.selection = selection
        self.buffer: dict[str, list[int]] = {}  # task name -> train row indices
        self.tasks: dict[str, Any] = {}

    def before_training_exp(self, strategy) -> None:
        self._rng = random.Random(strategy.config.seed * 1000 + strategy.experience.index)
        for task in strategy.experience.tasks:
            self.tasks[task.name] = task

    def before_training_iteration(self, strategy) -> None:
        pool = [(name, i) for name, rows in self.buffer.items() for i in rows if name in self.tasks]
        if not pool:
            return
        picks = self._rng.choices(pool, k=self.replay_batch_size)
        strategy.mb_examples = strategy.mb_examples + [(self.tasks[n], i) for n, i in picks]

    def after_training_exp(self, strategy) -> None:
        for task in strategy.experience.tasks:
            self.buffer[task.name] = list(range(len(task.train)))
        rng = random.Random(strategy.config.seed)
        for (name, rows), share in zip(self.buffer.items(), self._shares(len(self.buffer)), strict=True):
            self.buffer[name] = self._select(self.tasks[name], rows, share, rng)

    def _shares(self, n_tasks: int) -> list[int]:
        """Each task's share of the buffer, ``buffer_size // n_tasks``, the remainder one row each to
        the first tasks (Avalanche's ``ExperienceBalancedBuffer.get_group_lengths``)."""
        shares = [self.buffer_size // n_tasks] * n_tasks
        for i in range(self.buffer_size % n_tasks):
            shares[i] += 1
        return shares

    def _select(self, task, rows: list[int], k: int, rng: random.Random) -> list[int]:
        if len(rows) <= k:
            return rows
        if self.selection == "random":
            return sorted(rng.sample(rows, k))
        by_answer: dict[str, list[int]] = defaultdict(list)
        answers = task.train["answer"]
        for i in rows:
            by_answer[answers[i]].append(i)
        groups = [rng.sample(g, len(g)) for _, g in sorted(by_answer.items())]
        chosen = [g[j] for j in range(max(map(len, groups))) for g in groups if j < len(g)]
        return sorted(chosen[:k])

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer = {name: list(rows) for name, rows in state["buffer"].items()}

    def attach_tasks(self, tasks) -> None:
        """Give the plugin the stream's tasks so a resumed buffer can find its rows."""
        for task in tasks:
            self.tasks.setdefault(task.name, task)


@register("replay")
def replay(buffer_size: int = 200, replay_batch_size: int = 8, selection: str = "random") -> Preset:
    """Fine-tune the scope with a buffer of earlier rows mixed into every batch."""
    if buffer_size < 1 or replay_batch_size < 1:
        raise ValueError(
            f"replay: buffer_size and replay_batch_size must be positive, got {buffer_size}, "
            f"{replay_batch_size}"
        )
    if selection not in SELECTIONS:
        raise ValueError(f"replay: selection must be one of {SELECTIONS}, got {selection!r}")
    return Preset(plugins=[ReplayPlugin(buffer_size, replay_batch_size, selection)])
