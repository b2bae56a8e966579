"""Read run directories written by ``cltune run``, checking that they are whole.

:func:`load_run` validates one directory (``config.json`` and ``results.json``) and raises a
:class:`RunDirectoryError` that names the run, the problem and the fix. :func:`find_runs`
expands folders of runs. :func:`compare_runs` checks that runs share a stream and tabulates them
(:mod:`cltune.analysis.comparison`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cltune.analysis.metrics import cl_metrics
from cltune.matrix import AccuracyMatrix

# The schema experiment.py writes (cltune.experiment.RESULTS_SCHEMA; analysis does not import the
# training side, so the value is repeated here and a test checks that both agree).
RESULTS_SCHEMA = "cltune.results/1"
ANALYSIS_DIR = "analysis"
# The fields each file must have, as dotted paths, and their types (the files' schema).
CONFIG_SCHEMA: dict[str, type] = {
    "stream": dict,
    "stream.name": str,
    "stream.tasks": list,
    "strategy": str,
    "model": str,
    "train": dict,
    "train.seed": int,
}
RESULTS_FIELDS: dict[str, type] = {
    "stream": str,
    "strategy": str,
    "model": str,
    "seed": int,
    "finished": bool,
    "matrix": dict,
    "matrix.values": list,
    "matrix.tasks": list,
    "matrix.general": list,
    "matrix.stages": list,
    "summary": dict,
    "timings": dict,
}
_FIX = "restore the file, or delete the run directory and run it again"


class RunDirectoryError(ValueError):
    """A run directory is missing, incomplete or damaged."""


class StreamMismatchError(ValueError):
    """Runs of different streams were compared together."""


def _read_json(path: Path, run: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirectoryError(
            f"run {run}: {path.name} is missing"
            + (
                "; this is not a run directory written by `cltune run`"
                if path.name == "config.json"
                else "; the run has not finished its zero-shot evaluation, run `cltune run` again "
                "with the same --out to resume it"
            )
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"run {run}: {path.name} is damaged (not valid JSON: {err}); {_FIX}") from err
    if not isinstance(data, dict):
        raise RunDirectoryError(f"run {run}: {path.name} is damaged (a JSON object was expected); {_FIX}")
    return data


def _check_schema(data: dict[str, Any], schema: dict[str, type], file: str, run: Path) -> None:
    """Raise :class:`RunDirectoryError` naming the file and the first field that is missing or of
    the wrong type (fields are dotted paths into nested objects)."""
    for field, kind in schema.items():
        parent, _, key = field.rpartition(".")
        holder = data
        for part in parent.split(".") if parent else []:
            holder = holder[part]  # the parent was checked first: it is a dict
        if key not in holder:
            raise RunDirectoryError(f"run {run}: {file} is damaged (no {field!r} field); {_FIX}")
        value = holder[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RunDirectoryError(
                f"run {run}: {file} is damaged ({field!r} should be of type {kind.__name__}, "
                f"got {type(value).__name__}); {_FIX}"
            )


def read_config(run: str | Path) -> dict[str, Any]:
    """``config.json`` of a run directory, checked against :data:`CONFIG_SCHEMA`."""
    run = Path(run)
    config = _read_json(run / "config.json", run)
    _check_schema(config, CONFIG_SCHEMA, "config.json", run)
    return config


def read_results(run: str | Path) -> dict[str, Any]:
    """``results.json`` of a run directory, checked against its schema (:data:`RESULTS_SCHEMA`
    and :data:`RESULTS_FIELDS`) and its accuracy matrix against its labels."""
    run = Path(run)
    results = _read_json(run / "results.json", run)
    if results.get("schema") != RESULTS_SCHEMA:
        raise RunDirectoryError(
            f"run {run}: results.json has schema {results.get('schema')!r}, expected {RESULTS_SCHEMA!r}; "
            "it was written by another version of cltune or is damaged"
        )
    _check_schema(results, RESULTS_FIELDS, "results.json", run)
    _matrix(results, run)
    return results


def read_events(run: str | Path) -> list[dict[str, Any]]:
    """The events of ``events.jsonl``; a torn last line (a process killed mid-append) is skipped,
    a damaged line anywhere else is a :class:`RunDirectoryError`."""
    path = Path(run) / "events.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    events = []
    for n, line in enumerate(lines):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as err:
            if n == len(lines) - 1:
                break
            raise RunDirectoryError(f"run {run}: events.jsonl line {n + 1} is damaged ({err})") from err
    return events


def _matrix(results: dict[str, Any], run: Path) -> AccuracyMatrix:
    try:
        matrix = AccuracyMatrix.from_dict(results["matrix"])
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirectoryError(
            f"run {run}: results.json has a damaged accuracy matrix ({err!r}); {_FIX}"
        ) from err
    values = matrix.values[~np.isnan(matrix.values)]
    if values.size and (values.min() < 0 or values.max() > 100):
        raise RunDirectoryError(
            f"run {run}: results.json has accuracy values outside 0–100 "
            f"({values.min():g} to {values.max():g}); the file is damaged"
        )
    return matrix


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

    def checkpoint(self) -> Path | None:
        """The ``checkpoint-N`` folder of the last stage ``results.json`` lists as finished (the
        trained parameters after stage N), if it is whole (its ``stage.json`` is written last).

        A run killed after writing a newer checkpoint but before its results has a newer folder;
        it is ignored, as a resumed run ignores it.
        """
        done = int((~np.isnan(self.matrix.values).any(axis=1)).sum()) - 1
        folder = self.path / f"checkpoint-{done}"
        return folder if (folder / "stage.json").is_file() else None

    def trained_params(self) -> dict[str, torch.Tensor]:
        """The parameters the run trained, after its last finished stage, named as in the trained
        model (``base_model.model.…`` with LoRA factors for a PEFT run)."""
        folder = self.checkpoint()
        if folder is None:
            raise RunDirectoryError(
                f"run {self.path}: no checkpoint-N/params.safetensors, so its trained parameters are "
                "unknown; finish the run with `cltune run` (the last checkpoint is kept)"
            )
        try:
            return load_file(str(folder / "params.safetensors"))
        except (SafetensorError, OSError, ValueError) as err:
            raise RunDirectoryError(
                f"run {self.path}: {folder.name}/params.safetensors is damaged ({err}); run it again"
            ) from err


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
    matrix = _matrix(results, run)
    expected = [t.get("name") for t in config["stream"].get("tasks", []) if isinstance(t, dict)]
    if expected and expected != matrix.tasks:
        raise RunDirectoryError(
            f"run {run}: results.json has tasks {matrix.tasks} but config.json's stream has {expected}"
        )
    return Run(run, config, results, matrix)


def is_run_directory(path: Path) -> bool:
    return (path / "config.json").is_file()


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
        done = int((~np.isnan(run.matrix.values).all(axis=1)).sum()) - 1
        raise RunDirectoryError(
            f"run {run.path}: not finished ({done} of {len(run.matrix.values) - 1} stages evaluated); "
            "resume it with `cltune run` and the same --out, or leave it out"
        )
