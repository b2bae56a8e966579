"""Task and Stream: the experiences a model is tuned on, and the tasks that measure what it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

REQUIRED_COLUMNS = ("question", "answer")


@dataclass
class Task:
    """One downstream task: train and test splits with ``image``, ``question``, ``answer`` columns.

    ``image`` is a :class:`datasets.Image` feature and may be absent for text-only tasks;
    ``choices`` (a list of strings per row) is optional. ``metric`` names how answers are scored.
    """

    name: str
    train: datasets.Dataset
    test: datasets.Dataset
    metric: str = "exact_match"

    def __post_init__(self) -> None:
        for split_name, split in (("train", self.train), ("test", self.test)):
            missing = [c for c in REQUIRED_COLUMNS if c not in split.column_names]
            if missing:
                raise ValueError(
                    f"task {self.name!r}: the {split_name} split lacks column(s) {missing}; "
                    f"a task needs {list(REQUIRED_COLUMNS)} (and optionally 'image', 'choices')"
                )
        if len(self.test) == 0:
            raise ValueError(f"task {self.name!r} has an empty test split: give it test samples")

    @property
    def has_images(self) -> bool:
        return "image" in self.test.column_names


@dataclass
class Stream:
    """An ordered list of tasks (the experiences) plus general tasks that are never trained on."""

    name: str
    tasks: list[Task]
    general: list[Task] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"stream {self.name!r} has no tasks: add at least one [[tasks]] entry")
        names = [t.name for t in (*self.tasks, *self.general)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stream {self.name!r}: task names must be unique, repeated: {duplicates}")
        for task in self.tasks:
            if len(task.train) == 0:
                raise ValueError(f"task {task.name!r} has an empty train split: give it train samples")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def general_names(self) -> list[str]:
        return [t.name for t in self.general]
