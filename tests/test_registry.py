"""Strategies from outside the package (a user's file, an installed package's entry point) and the
registry's parameter type check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, small_recipe_text

from cltune.strategies import registry
from cltune.strategies.registry import (
    BUILTIN,
    build_preset,
    load_strategy_file,
    sharded_strategies,
    strategy_origin,
)

# A user's strategy file. No ``from __future__ import annotations``: its annotations are classes,
# not strings, and the type check must still read them.
USER_STRATEGY = '''\
"""A user's own strategy, outside the cltune package."""

import cltune


class CountUpdates(cltune.Plugin):
    """Prints how many optimizer updates each experience made (reads no parameter: runs sharded)."""

    full_parameters = None

    def before_training_exp(self, strategy):
        self.updates = 0

    def after_update(self, strategy):
        self.updates += 1

    def after_training_exp(self, strategy):
        print(f"user plugin: {{self.updates}} update(s)")


@cltune.register("{name}")
def user_method(steps: int = 1, scale: float = 1.0, label: str | None = None) -> cltune.Preset:
    """Naive fine-tuning that counts its updates (a user's strategy)."""
    return cltune.Preset(plugins=[CountUpdates()])
'''

# A tiny installed distribution: a module and its dist-info with an entry point in cltune's group.
EP_MODULE = '''\
"""An installed package that brings a cltune strategy."""

import cltune


def ep_method(strength: float = 0.5) -> cltune.Preset:
    """Naive fine-tuning, from an installed package's entry point."""
    return cltune.Preset()
'''


def _strategy_file(folder: Path, name: str, file: str = "my_method.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(USER_STRATEGY.format(name=name))
    return path


def _installed_dist(site: Path, entry_points: str) -> Path:
    """``site`` as a site-packages folder holding the distribution ``cltune-ext-demo 0.1``."""
    (site / "cltune_ext_demo").mkdir(parents=True)
    (site / "cltune_ext_demo" / "__init__.py").write_text(EP_MODULE)
    info = site / "cltune_ext_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cltune-ext-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cltune.strategies]\n{entry_points}\n")
    return site


def _cli(*args: str, cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "cltune", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


# --- a strategy file ---------------------------------------------------------------------------


def test_a_strategy_file_registers_its_strategies_without_touching_sys_path(tmp_path):
    path = _strategy_file(tmp_path / "user", "file-method", file="json.py")  # shadows nothing
    path_before, json_module = list(sys.path), sys.modules["json"]
    assert load_strategy_file(path) == ["file-method"]
    assert sys.path == path_before and sys.modules["json"] is json_module
    assert strategy_origin("file-method") == str(path)
    assert registry.strategy_defaults("file-method") == {"steps": 1, "scale": 1.0, "label": None}
    assert type(build_preset("file-method").plugins[0]).__name__ == "CountUpdates"
    assert load_strategy_file(path) == ["file-method"]  # loaded once: no clash with itself


def test_the_type_check_reads_annotations_that_are_not_strings(tmp_path):
    """The file has no ``from __future__ import annotations``, so its annotations are the classes
    themselves; ``typing.get_type_hints`` reads both kinds."""
    load_strategy_file(_strategy_file(tmp_path, "typed-method"))
    with pytest.raises(
        ValueError, match="parameter steps of strategy 'typed-method' must be of type int, got 'many'"
    ):
        build_preset("typed-method", steps="many")
    with pytest.raises(ValueError, match="must be of type int, got True"):
        build_preset("typed-method", steps=True)
    with pytest.raises(
        ValueError, match=r"parameter label of strategy 'typed-method' must be of type str \| None, got 3"
    ):
        build_preset("typed-method", label=3)
    build_preset("typed-method", steps=2, scale=2, label=None)  # an int stands for a float


def test_bad_strategy_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.py' does not exist.*@cltune\.register"):
        load_strategy_file(tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("import cltune\n")
    with pytest.raises(ValueError, match=r"empty\.py' registers no strategy; decorate a function"):
        load_strategy_file(empty)
    text = tmp_path / "notes.txt"
    text.write_text("")
    with pytest.raises(ValueError, match="is not a Python file"):
        load_strategy_file(text)
    with pytest.raises(ValueError, match=r"strategy name 'my method': use letters, digits"):
        registry.register("my method")


def test_a_name_is_registered_from_one_place_only(tmp_path):
    with pytest.raises(
        ValueError, match=r"strategy 'naive' from .*clashes with a built-in cltune strategy; choose"
    ):
        load_strategy_file(_strategy_file(tmp_path / "a", "naive"))
    assert strategy_origin("naive") == BUILTIN
    first = _strategy_file(tmp_path / "b", "twice-method")
    load_strategy_file(first)
    second = _strategy_file(tmp_path / "c", "twice-method")
    with pytest.raises(ValueError, match=rf"from {second}.*already registered from {first}; rename one"):
        load_strategy_file(second)
    assert strategy_origin("twice-method") == str(first)


def test_an_entry_point_that_takes_a_built_in_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_installed_dist(tmp_path, "naive = cltune_ext_demo:ep_method")))
    registry._load_entry_points.cache_clear()
    try:
        with pytest.raises(
            ValueError, match=r"strategy 'naive' from cltune-ext-demo 0\.1 .*clashes with a built-in"
        ):
            registry.strategy_names()
    finally:
        monkeypatch.undo()
        registry._load_entry_points.cache_clear()
    assert strategy_origin("naive") == BUILTIN


def test_the_strategies_that_run_sharded(tmp_path):
    load_strategy_file(_strategy_file(tmp_path, "sharded-method"))
    assert [n for n in sharded_strategies() if strategy_origin(n) == BUILTIN] == [
        "joint",
        "lora",
        "naive",
        "replay",
    ]
    assert "sharded-method" in sharded_strategies()  # its plugin declares full_parameters = None


# --- through the command line, from outside the repository -------------------------------------


def test_cltune_list_shows_strategies_from_a_file_and_an_installed_package(tmp_path):
    user = _strategy_file(tmp_path / "user", "user-method")
    site = _installed_dist(tmp_path / "site", "ep-method = cltune_ext_demo:ep_method")
    proc = _cli("list", "--plugins", str(user), cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert lines["user-method"].endswith(f"[steps=1, scale=1.0, label=None] (from {user})")
    assert "a user's strategy" in lines["user-method"]
    assert lines["ep-method"].endswith(
        "[strength=0.5] (from cltune-ext-demo 0.1 (entry point cltune_ext_demo:ep_method))"
    )
    assert "(from" not in lines["naive"]
    proc = _cli("list", "--plugins", str(tmp_path / "nope.py"), cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 2 and "nope.py' does not exist" in proc.stderr


@pytest.mark.slow
def test_cltune_run_trains_a_users_strategy_and_an_installed_one(tmp_path, tiny_cached):
    """``cltune run --strategies user-method,ep-method --plugins my_method.py``: one short stage each."""
    user = _strategy_file(tmp_path / "user", "user-method")
    site = _installed_dist(tmp_path / "site", "ep-method = cltune_ext_demo:ep_method")
    recipe = tmp_path / "one.toml"
    recipe.write_text(small_recipe_text(tasks=("parity",), train_size=16, test_size=8))
    out = tmp_path / "runs"
    args = ["--strategies", "user-method,ep-method", "--param", "ep-method.strength=1", "--out", str(out)]
    args += ["--set", "max_steps=1", "--analyze", "none", "--no-report", "--quiet"]
    proc = _cli("run", str(recipe), *args, "--plugins", str(user), cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("user plugin: 1 update(s)") == 1  # the user's plugin ran, in its own run only
    for name, params in (("user-method", {}), ("ep-method", {"strength": 1})):
        run_dir = out / f"small-{name}-seed0"
        results = json.loads((run_dir / "results.json").read_text())
        assert results["finished"] and results["strategy"] == name
        assert len(results["matrix"]["values"]) == 2  # zero-shot and the one stage
        assert json.loads((run_dir / "config.json").read_text())["strategy_params"] == params
