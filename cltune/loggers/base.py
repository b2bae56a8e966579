"""The logger plugin: what every logger records, and when."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cltune.strategies.plugin import Plugin


class MissingLoggerPackage(ValueError):
    """A logger's package is not installed; the message names the ``pip install`` that fixes it."""


def require(module: str, logger: str, package: str) -> Any:
    """Import ``module`` for ``logger``; a :class:`MissingLoggerPackage` naming ``pip install package``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingLoggerPackage(
            f"the {logger!r} logger needs the {package} package, which is not installed ({err}); "
            f"run `pip install {package}`, or drop {logger!r} from the loggers"
        ) from err


def finite_metrics(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """The metrics that have a number (undefined metrics are None)."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


class RunLogger(Plugin):
    """A plugin that logs a run: the train loss of every iteration, each evaluation's accuracy row
    and the summary metrics.

    The loss comes from the ``after_training_iteration`` hook (``strategy.loss``; ``step`` counts
    iterations across experiences). The run calls :meth:`log_scores` after evaluating a stage
    (stage 0 is the zero-shot row) and :meth:`log_summary` when it finishes, then :meth:`close`.
    Subclasses implement the three ``write_*`` methods.
    """

    name = ""
    module: str | None = None  # the module the logger imports, from PyPI package ``package``
    package = ""

    @classmethod
    def check_package(cls) -> Any:
        """The logger's module, imported; a :class:`MissingLoggerPackage` if it is not installed."""
        return require(cls.module, cls.name, cls.package) if cls.module else None

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})  # the run's configuration, for loggers that record it
        self.step = 0

    def after_training_iteration(self, strategy: Any) -> None:
        self.step += 1
        self.write_loss(self.step, strategy.experience.index, float(strategy.loss.detach()))

    def log_scores(self, stage: int, scores: Mapping[str, float]) -> None:
        """One row of the accuracy matrix: every task's score (0–100) after ``stage``."""
        self.write_scores(stage, dict(scores))

    def log_summary(self, metrics: Mapping[str, float | None]) -> None:
        """The run's summary metrics (``results.json`` ``summary``); None values are left out."""
        self.write_summary(finite_metrics(metrics))

    def write_loss(self, step: int, experience: int, loss: float) -> None:
        raise NotImplementedError

    def write_scores(self, stage: int, scores: dict[str, float]) -> None:
        raise NotImplementedError

    def write_summary(self, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
