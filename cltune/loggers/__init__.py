"""Loggers as plugins: TensorBoard, Weights & Biases and CSV, chosen by name.

Each logger is a :class:`RunLogger` plugin: it logs the train loss of every iteration from the
``after_training_iteration`` hook, and the run gives it each accuracy row
(:meth:`RunLogger.log_scores`), the summary metrics (:meth:`RunLogger.log_summary`) and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cltune.loggers.base import MissingLoggerPackage, RunLogger
from cltune.loggers.csv_logger import CSVLogger
from cltune.loggers.tensorboard_logger import TensorBoardLogger
from cltune.loggers.wandb_logger import WandbLogger
from cltune.utils import unknown_name_error

LOGGERS: dict[str, type[RunLogger]] = {
    CSVLogger.name: CSVLogger,
    TensorBoardLogger.name: TensorBoardLogger,
    WandbLogger.name: WandbLogger,
}


def check_loggers(names: str | Sequence[str]) -> list[str]:
    """Logger names from a list or a comma-separated string, without repeats, once each is known
    (else a ValueError with a 'did you mean') and its package installed (else a
    :class:`MissingLoggerPackage` naming the ``pip install``). Writes nothing."""
    if isinstance(names, str):
        names = names.split(",")
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    for name in wanted:
        if name not in LOGGERS:
            raise unknown_name_error("logger", name, LOGGERS)
    for name in wanted:
        LOGGERS[name].check_package()
    return wanted


def build_loggers(
    names: str | Sequence[str], run_dir: str | Path, config: Mapping[str, Any] | None = None
) -> list[RunLogger]:
    """The loggers ``names`` for the run directory ``run_dir`` (``config`` is recorded by the
    TensorBoard and W&B loggers), after :func:`check_loggers` has checked every one of them."""
    loggers: list[RunLogger] = []
    try:
        for name in check_loggers(names):
            loggers.append(LOGGERS[name](run_dir, config))
    except BaseException:
        for logger in loggers:
            logger.close()
        raise
    return loggers


__all__ = [
    "LOGGERS",
    "CSVLogger",
    "MissingLoggerPackage",
    "RunLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "build_loggers",
    "check_loggers",
]
