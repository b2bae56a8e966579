"""CSV logger: ``train_loss.csv``, ``accuracy.csv`` and ``summary.csv`` in ``<run_dir>/logs``."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cltune.loggers.base import RunLogger


class CSVLogger(RunLogger):
    """Appends one line per record and flushes it, so the files are readable while the run goes.

    ``train_loss.csv``: ``step, experience, loss``; ``accuracy.csv``: ``stage`` then one column
    per task (the header of the first row); ``summary.csv``: ``metric, value``.
    """

    name = "csv"

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None):
        super().__init__(run_dir, config)
        self.folder = self.run_dir / "logs"
        self.folder.mkdir(parents=True, exist_ok=True)

    def _append(self, file: str, header: list[str], row: list) -> None:
        path = self.folder / file
        new = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(header)
            writer.writerow(row)

    def write_loss(self, step: int, experience: int, loss: float) -> None:
        self._append("train_loss.csv", ["step", "experience", "loss"], [step, experience, repr(loss)])

    def write_scores(self, stage: int, scores: dict[str, float]) -> None:
        self._append("accuracy.csv", ["stage", *scores], [stage, *map(repr, scores.values())])

    def write_summary(self, metrics: dict[str, float]) -> None:
        with open(self.folder / "summary.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["metric", "value"])
            writer.writerows([name, repr(value)] for name, value in metrics.items())
