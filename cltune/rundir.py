"""The run directory: its layout, the results schema, checkpoints, artefacts and atomic writes.

One run (stream × strategy × seed) owns one folder::

    config.json               what was asked (a resumed run must ask the same)
    results.json              the accuracy matrix so far (stages still to come are nulls), summary,
                              timings, versions; schema :data:`RESULTS_SCHEMA`
    events.jsonl              one JSON event per line (start, train, stage_done, resumed, ...)
    predictions/stage-N.json  every task's predictions after stage N
    checkpoint-N/             after the last finished stage N: params.safetensors (every parameter
                              that differs from the model as loaded), plugins.json +
                              plugins.safetensors (the plugins' state), then stage.json, written
                              last, which marks the checkpoint whole
    adapters/<name>/          PEFT adapters that strategies save (PEFT's own format)
    analysis/                 masks that strategies save, analyses of ``cltune analyze``

Every file is written atomically (:func:`cltune.utils.atomic_path`, :func:`cltune.utils.atomic_dir`
for a folder), so a killed run leaves each file old or new, never half, and resumes after the last
stage that ``results.json`` lists as finished (:func:`finished_stages`). Nothing here unpickles:
plugin state is tensors (safetensors) and JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from cltune.matrix import AccuracyMatrix
from cltune.utils import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    ensure_writable_dir,
    remove_stale_temporaries,
)

RESULTS_SCHEMA = "cltune.results/1"
PLUGIN_STATE_FORMAT = "cltune.plugin-state/1"
CONFIG = "config.json"
RESULTS = "results.json"
EVENTS = "events.jsonl"
PREDICTIONS_DIR = "predictions"
ANALYSIS_DIR = "analysis"
ADAPTERS_DIR = "adapters"
REPORT_DIR = "report"
MASKS_PREFIX = "masks-"  # analysis/masks-<task>.safetensors
PARAMS = "params.safetensors"
PLUGIN_STATE = "plugins.json"
PLUGIN_TENSORS = "plugins.safetensors"
STAGE = "stage.json"
PICKLED_PLUGIN_STATE = "plugins.pt"  # what cltune wrote before plugin state went pickle-free
WRITABLE_FIX = "choose a writable --out folder (or fix its permissions and free space)"
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
_TENSOR, _TUPLE = "__tensor__", "__tuple__"  # markers of the plugin-state JSON


class RunDirectoryError(ValueError):
    """A run directory is missing, incomplete or damaged."""


class RunConfigMismatch(ValueError):
    """A run directory was started with another configuration than the one asked now."""


def _read_json(path: Path, run: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirectoryError(
            f"run {run}: {path.name} is missing"
            + (
                "; this is not a run directory written by `cltune run`"
                if path.name == CONFIG
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
    config = _read_json(run / CONFIG, run)
    _check_schema(config, CONFIG_SCHEMA, CONFIG, run)
    return config


def read_results(run: str | Path) -> dict[str, Any]:
    """``results.json`` of a run directory, checked against its schema (:data:`RESULTS_SCHEMA`
    and :data:`RESULTS_FIELDS`) and its accuracy matrix against its labels."""
    run = Path(run)
    results = _read_json(run / RESULTS, run)
    if results.get("schema") != RESULTS_SCHEMA:
        raise RunDirectoryError(
            f"run {run}: results.json has schema {results.get('schema')!r}, expected {RESULTS_SCHEMA!r}; "
            "it was written by another version of cltune or is damaged"
        )
    _check_schema(results, RESULTS_FIELDS, RESULTS, run)
    results_matrix(results, run)
    return results


def results_matrix(results: dict[str, Any], run: Path) -> AccuracyMatrix:
    """The accuracy matrix of ``results``; a :class:`RunDirectoryError` if it is damaged."""
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


def read_events(run: str | Path) -> list[dict[str, Any]]:
    """The events of ``events.jsonl``; a torn last line (a process killed mid-append) is skipped,
    a damaged line anywhere else is a :class:`RunDirectoryError`."""
    path = Path(run) / EVENTS
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


def finished_stages(matrix: AccuracyMatrix) -> int:
    """How many stages after zero-shot are finished: ``results.json`` pads the stages still to
    come with rows of nulls, so a row with any value is a finished one."""
    return int((~np.isnan(matrix.values).all(axis=1)).sum()) - 1


def default_report_dir(run_dirs: Sequence[str | Path]) -> Path:
    """Where a report of ``run_dirs`` goes by default: ``report/`` in the folder that holds them
    (where ``cltune run`` writes the report of its runs)."""
    parents = [str(Path(run).resolve().parent) for run in run_dirs]
    return Path(os.path.commonpath(parents)) / REPORT_DIR


def _config_diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for key in sorted(set(old) | set(new), key=str)
            for line in _config_diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        ]
    return [] if old == new else [f"  {path}: was {old!r}, now {new!r}"]


def encode_plugin_states(
    states: Sequence[tuple[str, dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``[(plugin name, state_dict), ...]`` as JSON (tensors replaced by references) and the
    tensors (on the CPU) by reference; a TypeError names the plugin and key of a value that is
    neither a tensor nor JSON (dicts with string keys, lists, tuples, str, int, float, bool, None)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = value.detach().to("cpu").clone().contiguous()
            return {_TENSOR: key}
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or key in (_TENSOR, _TUPLE):
                    raise TypeError(f"{where}: key {key!r} is not a string (or is reserved)")
            return {key: encode(item, f"{where}[{key!r}]") for key, item in value.items()}
        if isinstance(value, tuple):
            return {_TUPLE: [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if value is None or isinstance(value, str | bool | int | float):
            return value
        raise TypeError(f"{where} is a {type(value).__name__}")

    encoded = []
    for name, state in states:
        try:
            encoded.append({"plugin": name, "state": encode(state, "state")})
        except TypeError as err:
            raise TypeError(
                f"plugin {name}: its state_dict() cannot be saved without pickle ({err}); a plugin's "
                "state must be tensors and JSON values (dicts with string keys, lists, tuples, str, "
                "int, float, bool, None)"
            ) from None
    return {"format": PLUGIN_STATE_FORMAT, "plugins": encoded}, tensors


def decode_plugin_states(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The state dicts that :func:`encode_plugin_states` encoded, in plugin order."""

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_TENSOR}:
                return tensors[value[_TENSOR]]
            if set(value) == {_TUPLE}:
                return tuple(decode(item) for item in value[_TUPLE])
            return {key: decode(item) for key, item in value.items()}
        if isinstance(value, list):
            return [decode(item) for item in value]
        return value

    return [decode(entry["state"]) for entry in document["plugins"]]


class RunDirectory:
    """Reads and writes the files of one run directory; with ``writes=False`` (a process other than
    the main one of a multi-process run) it reads only, and every write is skipped."""

    def __init__(self, path: str | Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def analysis_dir(self) -> Path:
        """Where analyses and the masks strategies keep live (``analysis/``)."""
        return self.path / ANALYSIS_DIR

    def checkpoint_dir(self, stage: int) -> Path:
        return self.path / f"checkpoint-{stage}"

    def log(self, event: str, **fields: Any) -> None:
        if not self.writes:
            return
        with open(self.path / EVENTS, "a") as f:
            f.write(json.dumps({"time": time.time(), "event": event, **fields}) + "\n")

    def previous(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """Earlier results of this run directory, if any; reads only.

        Raises :class:`RunConfigMismatch` if the directory was started with another configuration,
        and a :class:`RunDirectoryError` naming the file and field if its ``config.json`` or
        ``results.json`` is damaged.
        """
        if not (self.path / CONFIG).is_file():
            return None
        differences = _config_diff(read_config(self.path), json.loads(json.dumps(config)))
        if differences:
            raise RunConfigMismatch(
                f"run directory {self.path} was started with another configuration:\n"
                + "\n".join(differences)
                + "\nuse another --out folder, or delete the directory to start over"
            )
        return read_results(self.path) if self.results_path.is_file() else None

    def start(self, config: dict[str, Any]) -> None:
        """Create the directory (or tidy the one a killed run left) and record ``config``.

        A killed run may have left temporary files of atomic writes and a torn last line in
        ``events.jsonl``; both are removed, and an event says so.
        """
        if not self.writes:
            return
        ensure_writable_dir(self.path, "the run directory", WRITABLE_FIX)
        repaired = [str(p.relative_to(self.path)) for p in remove_stale_temporaries(self.path)]
        if self._drop_torn_event():
            repaired.append("events.jsonl (torn last line)")
        if not (self.path / CONFIG).is_file():
            atomic_write_json(self.path / CONFIG, config)
        if repaired:
            self.log("repaired", removed=repaired)

    def _drop_torn_event(self) -> bool:
        """Cut a last line of ``events.jsonl`` that has no newline (a kill mid-append)."""
        path = self.path / EVENTS
        data = path.read_bytes() if path.is_file() else b""
        if not data or data.endswith(b"\n"):
            return False
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])
        return True

    def save_results(self, results: dict[str, Any]) -> None:
        if self.writes:
            atomic_write_json(self.results_path, results)

    def save_predictions(self, stage: int, predictions: dict[str, Any]) -> None:
        """``{task: predictions}`` after ``stage``."""
        if self.writes:
            atomic_write_json(self.path / PREDICTIONS_DIR / f"stage-{stage}.json", predictions)

    def save_checkpoint(
        self,
        stage: int,
        params: dict[str, torch.Tensor],
        plugin_states: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """The parameters that differ from the loaded model and the plugins' ``(name, state)``
        after ``stage``; ``stage.json``, written last, marks the checkpoint whole. A plugin state
        that is neither tensors nor JSON is a TypeError before anything is written."""
        if not self.writes:
            return
        document, tensors = encode_plugin_states(plugin_states)
        folder = self.checkpoint_dir(stage)
        weights = {n: p.detach().to("cpu").clone().contiguous() for n, p in params.items()}
        atomic_write_bytes(folder / PARAMS, safetensors_bytes(weights))
        atomic_write_bytes(folder / PLUGIN_TENSORS, safetensors_bytes(tensors))
        atomic_write_json(folder / PLUGIN_STATE, document)
        atomic_write_json(folder / STAGE, {"stage": stage})

    def checkpoint(self, stage: int) -> Path | None:
        """The folder of the checkpoint after ``stage`` if it is whole (its ``stage.json`` exists)."""
        folder = self.checkpoint_dir(stage)
        return folder if (folder / STAGE).is_file() else None

    def load_params(self, stage: int) -> dict[str, torch.Tensor]:
        """The saved parameters of the checkpoint after ``stage``."""
        folder = self._whole_checkpoint(stage)
        try:
            return load_file(str(folder / PARAMS))
        except (SafetensorError, OSError, ValueError) as err:
            raise RunDirectoryError(
                f"run {self.path}: {folder.name}/{PARAMS} is damaged ({err}); run it again"
            ) from err

    def load_checkpoint(self, stage: int) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """The saved parameters and plugin states (in plugin order) after ``stage``.

        A checkpoint of an older cltune that pickled the plugins' state (``plugins.pt``) is refused:
        unpickling runs whatever code the file names.
        """
        folder = self._whole_checkpoint(stage)
        if not (folder / PLUGIN_STATE).is_file() and (folder / PICKLED_PLUGIN_STATE).is_file():
            raise RunDirectoryError(
                f"run {self.path}: {folder.name} keeps its plugin state in {PICKLED_PLUGIN_STATE}, a pickle "
                f"written by {self._written_by()}; this cltune does not unpickle run directories (that "
                "would run code from the file). Run the experiment again into a new --out folder (or "
                "delete this run directory)"
            )
        params = self.load_params(stage)
        document = json.loads((folder / PLUGIN_STATE).read_text())
        if document.get("format") != PLUGIN_STATE_FORMAT:
            raise RunDirectoryError(
                f"run {self.path}: {folder.name}/{PLUGIN_STATE} has format {document.get('format')!r}, "
                f"expected {PLUGIN_STATE_FORMAT!r}; {_FIX}"
            )
        return params, decode_plugin_states(document, load_file(str(folder / PLUGIN_TENSORS)))

    def _written_by(self) -> str:
        """The cltune version that ``results.json`` says wrote this run, as far as it can be read."""
        try:
            version = json.loads(self.results_path.read_text())["versions"]["cltune"]
        except (OSError, ValueError, KeyError, TypeError):
            return "an older cltune"
        return f"cltune {version}"

    def _whole_checkpoint(self, stage: int) -> Path:
        folder = self.checkpoint(stage)
        if folder is None:
            raise RunDirectoryError(
                f"run {self.path}: results.json lists {stage} finished stage(s) but checkpoint-{stage} "
                "is missing or incomplete; finish the run with `cltune run`, or delete the run "
                "directory to start over"
            )
        return folder

    def drop_checkpoints_except(self, stage: int) -> None:
        if not self.writes:
            return
        for folder in self.path.glob("checkpoint-*"):
            if folder.name != f"checkpoint-{stage}":
                shutil.rmtree(folder, ignore_errors=True)

    def save_masks(self, task: str, write: Callable[[Path], None]) -> Path:
        """Write a task's update masks, ``analysis/masks-<task>.safetensors``, as :meth:`save_analysis`."""
        return self.save_analysis(f"{MASKS_PREFIX}{task}.safetensors", write)

    def save_analysis(self, name: str, write: Callable[[Path], None]) -> Path:
        """Write the file ``analysis/<name>`` atomically: ``write(path)`` writes a temporary path
        that then replaces it. Returns the file's path."""
        path = self.analysis_dir / name
        if self.writes:
            with atomic_path(path) as tmp:
                write(tmp)
        return path

    def save_adapter(self, name: str, write: Callable[[Path], None]) -> Path:
        """Write the folder ``adapters/<name>`` atomically: ``write(folder)`` fills a fresh folder
        that then replaces it. Returns the folder's path."""
        folder = self.path / ADAPTERS_DIR / name
        if self.writes:
            with atomic_dir(folder, replace=True) as staging:
                write(staging)
        return folder
