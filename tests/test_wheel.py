"""A regular install: the wheel built from this checkout carries the stream recipes and runs.

The wheel is installed with ``pip install --no-deps`` into a fresh virtual environment that reuses
this environment's packages through a ``.pth`` file (``--system-site-packages`` would give the base
interpreter's, and this environment may itself be a venv). A ``.pth`` line only adds a folder to
``sys.path``, so an editable install of cltune in this environment (its finder is started by a
``.pth`` file of its own) never shadows the wheel; the test checks which ``cltune`` is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "cltune", "streams")  # what the build reads


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the wheel installed, and the environment to run it in (no PYTHONPATH)."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    source = root / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = (sys.executable, "-m", "pip")
    _run(
        *pip,
        "wheel",
        source,
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        root / "dist",
        cwd=root,
        env=env,
    )
    (wheel,) = (root / "dist").glob("cltune-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root, env=env)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root, env=env)
    Path(purelib.strip(), "test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(*pip, "--python", python, "install", "--no-deps", "-q", wheel, cwd=root, env=env)
    outside = root / "elsewhere"
    outside.mkdir()
    return venv, env, outside


@pytest.mark.slow
def test_the_installed_wheel_lists_the_recipes_and_runs_a_stream_by_name(installed, tiny_cached):
    venv, env, outside = installed
    where = _run(
        venv / "bin" / "python",
        "-c",
        "import cltune, importlib.resources as r; print(cltune.__file__); "
        "print(*sorted(p.name for p in (r.files('cltune') / 'streams').iterdir()))",
        cwd=outside,
        env=env,
    ).splitlines()
    assert Path(where[0]).is_relative_to(venv), where[0]
    recipes = sorted(p.name for p in (REPO / "streams").glob("*.toml"))
    assert recipes and where[1].split() == recipes

    listed = _run(venv / "bin" / "cltune", "list", cwd=outside, env=env)
    streams = listed.split("strategies:")[0].splitlines()[1:]
    assert [line.split()[0] for line in streams] == [name.removesuffix(".toml") for name in recipes]

    _run(
        venv / "bin" / "cltune",
        "run",
        "default",
        "--strategies",
        "naive",
        "--set",
        "max_steps=1",
        "--analyze",
        "none",
        "--no-report",
        "--quiet",
        cwd=outside,
        env=env,
    )
    results = json.loads((outside / "runs" / "default-naive-seed0" / "results.json").read_text())
    assert results["finished"]
    assert results["matrix"]["tasks"] == ["parity", "plus_one", "greater_than_4"]
    assert len(results["matrix"]["values"]) == 4
