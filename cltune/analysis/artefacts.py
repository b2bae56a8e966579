"""A run's analyses at rest in ``<run>/analysis/``: computed once by ``cltune analyze``, read by reports.

Files (every one optional; a report skips the figure of a missing one):

- ``weight_drift.csv``: :func:`~cltune.analysis.drift.weight_drift` of the trained model against
  the base model the run started from, one row per module.
- ``representation_drift.csv``: :func:`~cltune.analysis.drift.representation_drift` (linear CKA
  per layer) on the test rows of each general task (the stream tasks if it has none), column
  ``task``.
- ``importance-<task>.safetensors``: an :class:`~cltune.analysis.importance_map.ImportanceMap` of
  the trained model on each stream task's training rows.
- ``masks-<task>.safetensors``: masks a selective strategy kept for each task
  (:func:`cltune.selective.save_masks`, through :meth:`cltune.rundir.RunDirectory.save_analysis`);
  read for the mask-overlap figure.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors import SafetensorError
from torch import Tensor, nn
from tqdm.auto import tqdm

from cltune.analysis.batches import task_batches
from cltune.analysis.drift import representation_drift, weight_drift
from cltune.analysis.importance_map import ImportanceMap, importance_map
from cltune.analysis.runs import Run, RunDirectoryError
from cltune.data.task import Stream
from cltune.rundir import MASKS_PREFIX, RunDirectory
from cltune.selective.packing import load_masks

ANALYSES = ("drift", "representation", "importance")
WEIGHT_DRIFT = "weight_drift.csv"
REPRESENTATION_DRIFT = "representation_drift.csv"


def _read_csv(run: Run, name: str, columns: set[str]) -> pd.DataFrame | None:
    path = run.analysis_dir / name
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RunDirectoryError(
            f"run {run.path}: analysis/{name} is damaged ({err}); run `cltune analyze` again"
        ) from err
    missing = columns - set(frame.columns)
    if missing:
        raise RunDirectoryError(
            f"run {run.path}: analysis/{name} lacks column(s) {sorted(missing)}; run `cltune analyze` again"
        )
    return frame


def read_weight_drift(run: Run) -> pd.DataFrame | None:
    """The run's weight drift per module, or None if it was not analysed."""
    return _read_csv(
        run, WEIGHT_DRIFT, {"module", "layer", "module_type", "numel", "base_norm", "delta_norm"}
    )


def read_representation_drift(run: Run) -> pd.DataFrame | None:
    """The run's CKA per layer and task, or None if it was not analysed."""
    return _read_csv(run, REPRESENTATION_DRIFT, {"task", "layer", "cka"})


def _per_task(run: Run, prefix: str) -> dict[str, Path]:
    """``{task: <prefix><task>.safetensors}`` in the stream's task order (unknown names last)."""
    found = {
        p.name[len(prefix) : -len(".safetensors")]: p for p in run.analysis_dir.glob(f"{prefix}*.safetensors")
    }
    order = {task: i for i, task in enumerate(run.matrix.tasks)}
    return {task: found[task] for task in sorted(found, key=lambda t: (order.get(t, len(order)), t))}


def read_importance_maps(run: Run) -> dict[str, ImportanceMap]:
    """The run's importance map of each task it was measured on (empty if none)."""
    return {task: ImportanceMap.load(path) for task, path in _per_task(run, "importance-").items()}


def read_masks(run: Run) -> dict[str, dict[str, Tensor]]:
    """The masks a selective strategy saved for each task (empty if none)."""
    masks = {}
    for task, path in _per_task(run, MASKS_PREFIX).items():
        try:
            masks[task] = load_masks(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise RunDirectoryError(f"run {run.path}: analysis/{path.name} is damaged ({err})") from err
    return masks


def analyze_run(
    run: Run,
    base: nn.Module,
    tuned: nn.Module,
    processor: Any,
    stream: Stream,
    *,
    what: Iterable[str] = ANALYSES,
    method: str = "gradient",
    n_examples: int = 32,
    batch_size: int = 16,
    progress: bool = True,
) -> list[Path]:
    """Compute the analyses ``what`` of ``run`` into ``<run>/analysis/``; returns the files written.

    ``base`` is the model the run started from and ``tuned`` the trained model (see
    :func:`cltune.experiment.load_trained_model`); ``processor`` encodes the tasks of ``stream``.
    Importance maps use ``method`` on the first ``n_examples`` training rows of each stream task;
    representation drift the first ``n_examples`` test rows of each general task. A progress bar
    counts the analyses and tasks done unless ``progress`` is False.
    """
    chosen = list(what)
    unknown = sorted(set(chosen) - set(ANALYSES))
    if unknown:
        raise ValueError(f"unknown analysis {unknown[0]!r}; choose from {', '.join(ANALYSES)}")
    run_dir = RunDirectory(run.path)
    device = next(tuned.parameters()).device
    drift_tasks = stream.general or stream.tasks
    steps = ("drift" in chosen) + len(drift_tasks) * ("representation" in chosen)
    bar = tqdm(
        total=steps + len(stream.tasks) * ("importance" in chosen),
        desc=f"analyse {run.name}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    written: list[Path] = []
    if "drift" in chosen:
        frame = weight_drift(base, tuned)
        written.append(run_dir.save_analysis(WEIGHT_DRIFT, lambda path: frame.to_csv(path, index=False)))
        bar.update(1)
    if "representation" in chosen:
        frames = []
        for task in drift_tasks:
            batches = task_batches(
                task, processor, split="test", n_examples=n_examples, batch_size=batch_size, device=device
            )
            frames.append(representation_drift(base, tuned, batches).assign(task=task.name))
            bar.update(1)
        frame = pd.concat(frames, ignore_index=True)
        written.append(
            run_dir.save_analysis(REPRESENTATION_DRIFT, lambda path: frame.to_csv(path, index=False))
        )
    if "importance" in chosen:
        for task in stream.tasks:
            batches = task_batches(
                task, processor, n_examples=n_examples, batch_size=batch_size, device=device
            )
            found = importance_map(tuned, batches, method, info={"task": task.name, "run": run.name})
            written.append(run_dir.save_analysis(f"importance-{task.name}.safetensors", found.save))
            bar.update(1)
    bar.close()
    return written
