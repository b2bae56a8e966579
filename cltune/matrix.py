"""The accuracy matrix: the one object every cltune metric, table and figure derives from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ZERO_SHOT = "zero-shot"


@dataclass
class AccuracyMatrix:
    """Scores (0–100) of every task at every stage of a run.

    Row 0 is the model before any training; row ``t`` is the model after experience ``t``.
    Columns are the stream's tasks in training order, then the general tasks (never trained on).
    ``NaN`` marks a cell that was not evaluated (yet).
    """

    values: np.ndarray
    tasks: list[str]
    general: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=float)
        if self.values.ndim != 2:
            raise ValueError(f"accuracy matrix must be 2-D, got shape {self.values.shape}")
        n_cols = len(self.tasks) + len(self.general)
        if self.values.shape[1] != n_cols:
            raise ValueError(
                f"accuracy matrix has {self.values.shape[1]} columns but names "
                f"{len(self.tasks)} tasks + {len(self.general)} general tasks"
            )
        if not self.stages:
            self.stages = [ZERO_SHOT] + [f"after {t}" for t in self.tasks][: len(self.values) - 1]
        if len(self.stages) != len(self.values):
            raise ValueError(f"{len(self.stages)} stage labels for {len(self.values)} rows")

    @classmethod
    def from_values(
        cls, values: Sequence[Sequence[float]] | np.ndarray, n_tasks: int | None = None
    ) -> AccuracyMatrix:
        """A matrix from bare scores (e.g. pasted from a paper): row 0 zero-shot, row ``t`` after
        experience ``t``; the first ``n_tasks`` columns are stream tasks (default: all of them), the
        rest general tasks. Tasks are named ``task 1``, ``task 2``, ..., general tasks ``general 1``, ...
        """
        values = np.asarray(values, dtype=float)
        if values.ndim != 2:
            raise ValueError(f"accuracy matrix must be 2-D (stages × tasks), got shape {values.shape}")
        n_columns = values.shape[1]
        n_tasks = n_columns if n_tasks is None else n_tasks
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or not 0 <= n_tasks <= n_columns:
            raise ValueError(
                f"n_tasks must be an integer from 0 to the matrix's {n_columns} columns, got {n_tasks!r}"
            )
        return cls(
            values=values,
            tasks=[f"task {i}" for i in range(1, n_tasks + 1)],
            general=[f"general {g}" for g in range(1, n_columns - n_tasks + 1)],
        )

    @property
    def columns(self) -> list[str]:
        return [*self.tasks, *self.general]

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def task_values(self) -> np.ndarray:
        """Rows × stream-task columns."""
        return self.values[:, : self.n_tasks]

    @property
    def is_sequential(self) -> bool:
        """True when there is one row per experience (row 0 plus T rows)."""
        return len(self.values) == self.n_tasks + 1

    def to_dict(self) -> dict:
        return {
            "values": [[None if np.isnan(v) else float(v) for v in row] for row in self.values],
            "tasks": list(self.tasks),
            "general": list(self.general),
            "stages": list(self.stages),
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AccuracyMatrix:
        values = np.array(
            [[np.nan if v is None else v for v in row] for row in data["values"]], dtype=float
        ).reshape(len(data["values"]), len(data["tasks"]) + len(data.get("general", [])))
        return cls(
            values=values,
            tasks=list(data["tasks"]),
            general=list(data.get("general", [])),
            stages=list(data.get("stages", [])),
            metrics=dict(data.get("metrics", {})),
        )
