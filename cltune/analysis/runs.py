"""Read run directories written by ``cltune run``, checking that they are whole.

:func:`load_run` validates one directory (``config.json`` and ``results.json``) and raises a
:class:`RunDirectoryError` that names the run, the problem and the fix. :func:`find_runs`
expands folders of runs. :func:`compare_runs` checks that runs share a stream and tabulates them
(:mod:`cltune.analysis.comparison`). The files' layout and schema belong to :mod:`cltune.rundir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from cltune.analysis.metrics import cl_metrics
from cltune.matrix import AccuracyMatrix
from cltune.rundir import (
    ANALYSIS_DIR,
    CONFIG,
    RunDirectory,
    RunDirectoryError,
    finished_stages,
    read_config,
    read_results,
    results_matrix,
)


class StreamMismatchError(ValueError):
    """Runs of different streams were compared together."""


@dataclass
class Run:
    """One run directory: its configuration, results and accuracy matrix."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    matrix: AccuracyMatrix

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stream(self) -> str:
        return self.results["stream"]

    @property
    def recipe(self) -> dict[str, Any]:
        return self.config["stream"]

    @property
    def strategy(self) -> str:
        return self.results["strategy"]

    @property
    def strategy_params(self) -> dict[str, Any]:
        return self.config.get("strategy_params") or {}

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def seed(self) -> int:
        return self.results["seed"]

    @property
    def finished(self) -> bool:
        return self.results["finished"]

    @property
    def label(self) -> str:
        """The strategy with its non-default hyper-parameters, e.g. ``replay(buffer_size=100)``."""
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(self.strategy_params.items()))
        return f"{self.strategy}({params})" if params else self.strategy

    @cached_property
    def metrics(self) -> dict[str, float | None]:
        """Every metric of :func:`cltune.analysis.cl_metrics`, recomputed from the matrix."""
        return cl_metrics(self.matrix)

    @property
    def analysis_dir(self) -> Path:
        """Where ``cltune analyze`` writes this run's analyses (weight drift, importance maps)."""
        return self.path / ANALYSIS_DIR

    @property
    def finished_stages(self) -> int:
        """How many stages after zero-shot the run has finished (:func:`cltune.rundir.finished_stages`)."""
        return finished_stages(self.matrix)

    def checkpoint(self) -> Path | None:
        """The ``checkpoint-N`` folder of the last stage ``results.json`` lists as finished (the
        trained parameters after stage N), if it is whole (its ``stage.json`` is written last).

        A run killed after writing a newer checkpoint but before its results has a newer folder;
        it is ignored, as a resumed run ignores it.
        """
        return RunDirectory(self.path, writes=False).checkpoint(self.finished_stages)

    def trained_params(self) -> dict[str, torch.Tensor]:
        """The parameters the run changed, after its last finished stage, named as in the trained
        model (``base_model.model.…`` with LoRA factors for a PEFT run)."""
        if self.checkpoint() is None:
            raise RunDirectoryError(
                f"run {self.path}: no checkpoint-N/params.safetensors, so its trained parameters are "
                "unknown; finish the run with `cltune run` (the last checkpoint is kept)"
            )
        return RunDirectory(self.path, writes=False).load_params(self.finished_stages)


def load_run(path: str | Path) -> Run:
    """Read and validate the run directory ``path``; :class:`RunDirectoryError` if it is not whole."""
    run = Path(path)
    if not run.exists():
        raise RunDirectoryError(f"run {run}: the directory does not exist")
    if not run.is_dir():
        raise RunDirectoryError(f"run {run}: not a directory (give a run directory written by `cltune run`)")
    config = read_config(run)
    results = read_results(run)
    if results["strategy"] != config["strategy"] or results["stream"] != config["stream"].get("name"):
        raise RunDirectoryError(
            f"run {run}: results.json (stream {results['stream']!r}, strategy {results['strategy']!r}) "
            f"does not match config.json (stream {config['stream'].get('name')!r}, "
            f"strategy {config['strategy']!r}); the directory is damaged"
        )
    matrix = results_matrix(results, run)
    expected = [t.get("name") for t in config["stream"].get("tasks", []) if isinstance(t, dict)]
    if expected and expected != matrix.tasks:
        raise RunDirectoryError(
            f"run {run}: results.json has tasks {matrix.tasks} but config.json's stream has {expected}"
        )
    return Run(run, config, results, matrix)


def is_run_directory(path: Path) -> bool:
    return (path / CONFIG).is_file()


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory or a folder of them
    (e.g. a ``cltune run --out`` folder), expanded in name order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise RunDirectoryError(f"run {path}: the directory does not exist")
        if is_run_directory(path) or not path.is_dir():
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and is_run_directory(p))
        if not children:
            raise RunDirectoryError(
                f"run {path}: not a run directory (no config.json) and it holds no run directories"
            )
        found.extend(children)
    return list(dict.fromkeys(found))


def check_same_stream(runs: list[Run]) -> None:
    """Raise :class:`StreamMismatchError` unless every run trained on the same stream recipe."""
    first = runs[0]
    for run in runs[1:]:
        if run.stream != first.stream:
            raise StreamMismatchError(
                f"runs of different streams cannot be compared: run {run.path} is on stream {run.stream!r}, "
                f"run {first.path} on stream {first.stream!r}; compare runs of one stream at a time"
            )
        if run.recipe != first.recipe:
            differ = sorted(
                k for k in set(run.recipe) | set(first.recipe) if run.recipe.get(k) != first.recipe.get(k)
            )
            raise StreamMismatchError(
                f"runs of different streams cannot be compared: runs {run.path} and {first.path} are both on "
                f"stream {run.stream!r} but their recipes differ in {', '.join(differ)}; compare runs of "
                "one recipe at a time"
            )


def check_distinct(runs: list[Run]) -> None:
    """Raise if two runs have the same strategy, hyper-parameters, model and seed."""
    seen: dict[tuple, Run] = {}
    for run in runs:
        key = (run.label, run.model, run.seed)
        if key in seen:
            raise RunDirectoryError(
                f"runs {seen[key].path} and {run.path} are both {run.label} on {run.model} with seed "
                f"{run.seed}; give each run once"
            )
        seen[key] = run


def check_finished(run: Run) -> None:
    if not run.finished:
        raise RunDirectoryError(
            f"run {run.path}: not finished ({run.finished_stages} of {len(run.matrix.values) - 1} stages "
            "evaluated); "
            "resume it with `cltune run` and the same --out, or leave it out"
        )
