"""The layer map of DESIGN.md, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(package_root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contracts, on the ``cltune`` found in ``package_root``."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO / "pyproject.toml"), "--no-cache", "--no-logo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_the_package_keeps_every_layer_contract(tmp_path):
    proc = _lint_imports(REPO, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", proc.stdout), proc.stdout[-4000:]


def test_a_mechanism_package_importing_the_strategies_breaks_the_layers(tmp_path):
    """The contracts are not vacuous: ``cltune.selective`` (a mechanism) importing the engine is caught."""
    copy = tmp_path / "src"
    shutil.copytree(REPO / "cltune", copy / "cltune", ignore=shutil.ignore_patterns("__pycache__"))
    selective = copy / "cltune" / "selective" / "__init__.py"
    selective.write_text(selective.read_text() + "\nimport cltune.strategies.template  # noqa\n")
    proc = _lint_imports(copy, tmp_path, "--contract", "layers")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "cltune.selective is not allowed to import cltune.strategies" in proc.stdout
    assert "cltune.selective -> cltune.strategies.template" in proc.stdout


def test_a_method_importing_another_method_is_caught(tmp_path):
    """What two methods share lives in ``strategies.plugins``: ``gmt`` importing ``ewc`` is caught."""
    copy = tmp_path / "src"
    shutil.copytree(REPO / "cltune", copy / "cltune", ignore=shutil.ignore_patterns("__pycache__"))
    gmt = copy / "cltune" / "strategies" / "methods" / "gmt.py"
    gmt.write_text(gmt.read_text() + "\nimport cltune.strategies.methods.ewc  # noqa\n")
    proc = _lint_imports(copy, tmp_path)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "no method imports another method" in proc.stdout
    assert "cltune.strategies.methods.gmt -> cltune.strategies.methods.ewc" in proc.stdout
