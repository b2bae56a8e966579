"""Real run directories for the report, run-table and browser tests, made once per test session.

``cli_runs()`` calls ``cltune run`` on the small two-task recipe of conftest.py with three strategies
(naive, lora, joint) and two seeds, six optimizer steps per experience at a high learning rate (enough
to learn and forget, so the seeds differ): the whole command — runs, analyses, the aggregated table
and the report in ``<out>/report/`` — as a user runs it.
``other_stream_run()`` is one naive run of a differently named stream.
"""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
import tempfile
from pathlib import Path

from conftest import SMALL_RECIPE

from cltune.cli import main

STRATEGIES = ("naive", "lora", "joint")
SEEDS = (0, 1)


@functools.cache
def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="cltune-report-runs-"))


def _cli(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    if code != 0:
        raise RuntimeError(f"cltune {' '.join(args)} exited with {code}:\n{out.getvalue()}")
    return out.getvalue()


@functools.cache
def cli_runs() -> tuple[Path, str]:
    """(the ``--out`` folder, the command's printed output)."""
    recipe = _root() / "small.toml"
    recipe.write_text(SMALL_RECIPE)
    out = _root() / "runs"
    printed = _cli(
        [
            "run",
            str(recipe),
            "--strategies",
            ",".join(STRATEGIES),
            "--seeds",
            ",".join(map(str, SEEDS)),
            "--out",
            str(out),
            "--set",
            "max_steps=6",
            "--set",
            "lr=3e-3",
            "--examples",
            "16",
            "--quiet",
        ]
    )
    return out, printed


def run_dir(strategy: str, seed: int) -> Path:
    return cli_runs()[0] / f"small-{strategy}-seed{seed}"


@functools.cache
def other_stream_run() -> Path:
    recipe = _root() / "other.toml"
    # Another name and fewer training rows; the general task is unchanged, so the cached tiny model is reused.
    recipe.write_text(
        SMALL_RECIPE.replace('name = "small"', 'name = "other"').replace("train_size = 48", "train_size = 32")
    )
    out = _root() / "other"
    _cli(
        [
            "run",
            str(recipe),
            "--strategies",
            "naive",
            "--out",
            str(out),
            "--set",
            "max_steps=1",
            "--analyze",
            "none",
            "--no-report",
            "--quiet",
        ]
    )
    return out / "other-naive-seed0"


def copy_run(source: Path, destination: Path, analysis: bool = True) -> Path:
    """A copy of a run directory (without its analyses when ``analysis`` is False)."""
    shutil.copytree(source, destination, ignore=None if analysis else shutil.ignore_patterns("analysis"))
    return destination
