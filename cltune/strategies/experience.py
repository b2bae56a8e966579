"""An experience: what the template trains on at one stage of the stream."""

from __future__ import annotations

from dataclasses import dataclass

from cltune.data.task import Task


@dataclass
class Experience:
    """Stage ``index`` (1-based) trains on the train splits of ``tasks`` (one task, or all for joint)."""

    index: int
    tasks: list[Task]

    @property
    def name(self) -> str:
        return "+".join(t.name for t in self.tasks)

    @property
    def rows(self) -> list[tuple[Task, int]]:
        return [(task, i) for task in self.tasks for i in range(len(task.train))]
