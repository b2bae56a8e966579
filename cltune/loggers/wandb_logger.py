"""Weights & Biases logger: one W&B run per cltune run, its files in ``<run_dir>/wandb``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cltune.loggers.base import RunLogger


class WandbLogger(RunLogger):
    """Logs ``train/loss`` against ``train/step``, ``accuracy/<task>`` against ``stage``, and the
    summary metrics into the run's W&B summary; the run's configuration is the W&B config.

    The W&B run is named after the run directory, in project ``$WANDB_PROJECT`` (default
    ``cltune``). With ``WANDB_MODE=offline``, or when W&B has no API key (a printed fallback),
    the run is kept in ``<run_dir>/wandb/offline-run-*`` and ``wandb sync`` uploads it later.
    """

    name = "wandb"
    module, package = "wandb", "wandb"

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None):
        super().__init__(run_dir, config)
        wandb = self.check_package()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        options = {
            "project": os.environ.get("WANDB_PROJECT", "cltune"),
            "name": self.run_dir.name,
            "dir": str(self.run_dir),
            "config": self.config,
        }
        try:
            self.run = wandb.init(**options)
        except wandb.errors.UsageError as err:  # no API key: keep the run on disk instead
            print(
                f"cltune: W&B could not log online ({err}); logging offline to {self.run_dir / 'wandb'} "
                "instead: `wandb sync` uploads it later (set WANDB_MODE=offline to silence this)",
                file=sys.stderr,
            )
            self.run = wandb.init(mode="offline", **options)
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("stage")
        self.run.define_metric("accuracy/*", step_metric="stage")

    def write_loss(self, step: int, experience: int, loss: float) -> None:
        self.run.log({"train/step": step, "train/experience": experience, "train/loss": loss})

    def write_scores(self, stage: int, scores: dict[str, float]) -> None:
        self.run.log({"stage": stage, **{f"accuracy/{task}": score for task, score in scores.items()}})

    def write_summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def close(self) -> None:
        """Finish the W&B run (W&B's own process may still be flushing the run file for a moment)."""
        self.run.finish()
