"""cltune: continual tuning of multimodal LLMs, and measurement of what they forget."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cltune._version import __version__
from cltune.matrix import AccuracyMatrix

__all__ = ["AccuracyMatrix", "Plugin", "Preset", "__version__", "register", "report", "run"]


def __getattr__(name: str) -> Any:
    """``cltune.register``, ``cltune.Preset`` and ``cltune.Plugin`` (what a strategy file outside the
    package needs), imported on first use: the strategy engine loads torch and transformers."""
    if name in ("Preset", "register"):
        from cltune.strategies import registry

        return getattr(registry, name)
    if name == "Plugin":
        from cltune.strategies.plugin import Plugin

        return Plugin
    raise AttributeError(f"module 'cltune' has no attribute {name!r}")


def run(
    recipe: str | Path | dict | None = None,
    strategy: str = "naive",
    model: str = "tiny",
    out: str | Path = "runs",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    progress: bool = True,
    **train: Any,
):
    """Run one strategy through a stream; returns a result with ``.matrix``, ``.metrics`` and
    ``.run_dir`` (pass it to :func:`report`).

    ``recipe`` is a TOML file or built-in stream name (default: ``default``); ``params`` are the
    strategy's hyper-parameters; ``train`` are training options (``lr``, ``epochs``, ``max_steps``, ...).
    """
    from cltune.experiment import RunSpec, run_experiment

    spec = RunSpec.from_recipe(recipe, strategy, model=model, params=params, seed=seed, **train)
    return run_experiment(spec, out, progress=progress)


def report(
    runs: str | Path | Any | Sequence[str | Path | Any], out: str | Path | None = None
) -> dict[str, Path]:
    """Write the report (``report.md``, ``report.html``, ``metrics.csv``, figures) of ``runs`` — run
    directories, folders of them, or results of :func:`run` — into ``out`` (default: a ``report/``
    folder beside the runs, as ``cltune run`` writes it); returns the files written."""
    from cltune.analysis import find_runs
    from cltune.experiment import RunResult
    from cltune.reports import write_report
    from cltune.rundir import default_report_dir

    given = [runs] if isinstance(runs, str | Path | RunResult) else list(runs)
    run_dirs = find_runs([r.run_dir if isinstance(r, RunResult) else r for r in given])
    return write_report(run_dirs, default_report_dir(run_dirs) if out is None else out)
