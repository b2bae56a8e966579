"""TensorBoard logger: event files in ``<run_dir>/tensorboard`` (``tensorboard --logdir runs``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cltune.loggers.base import RunLogger


class TensorBoardLogger(RunLogger):
    """Scalars ``train/loss`` (x: iteration), ``accuracy/<task>`` (x: stage, 0 = zero-shot) and
    ``summary/<metric>`` (at step 0), and the run's configuration as text, written by
    ``torch.utils.tensorboard.SummaryWriter``."""

    name = "tensorboard"
    module, package = "torch.utils.tensorboard", "tensorboard"

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None):
        super().__init__(run_dir, config)
        tensorboard = self.check_package()
        self.writer = tensorboard.SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if self.config:
            self.writer.add_text("config", f"```json\n{json.dumps(self.config, indent=2)}\n```")

    def write_loss(self, step: int, experience: int, loss: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)

    def write_scores(self, stage: int, scores: dict[str, float]) -> None:
        for task, score in scores.items():
            self.writer.add_scalar(f"accuracy/{task}", score, stage)
        self.writer.flush()

    def write_summary(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"summary/{name}", value, 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
