"""Stream recipes: TOML files that name the tasks of a stream, their sources and sizes.

name = "default"
seed = 0
[defaults]            # optional: applied to every task that does not set them
train_size = 400
test_size = 100
[[tasks]]             # the experiences, in training order
name = "colour"
source = "easyvqa"
question_type = "color"   # any other key is an option of the source
labels = "train"      # optional: the label set (a list, or the train answers) for `cltune data check`
[[general]]           # held-out tasks that measure general knowledge (never trained on)
name = "shape"
source = "easyvqa"
question_type = "shape"
[train]               # optional: training options (see cltune.strategies.config.TrainConfig)
lr = 1e-3
[strategy.replay]     # optional: hyper-parameters of a named strategy
buffer_size = 100
"""

from __future__ import annotations

import inspect
import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from cltune.data.sources import DEFAULT_METRICS, get_source
from cltune.data.task import Stream, Task
from cltune.utils import derive_seed, unknown_name_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The repository's top-level streams/ folder, linked into the package as cltune/streams (a symlink)
# so that the wheel carries the recipes (package-data in pyproject.toml) and one path reads them.
STREAMS_DIR: Traversable = files("cltune") / "streams"
TOP_KEYS = {"name", "seed", "description", "defaults", "tasks", "general", "train", "strategy"}
TASK_KEYS = {"name", "source", "train_size", "test_size", "metric", "labels"}
SIZE_KEYS = ("train_size", "test_size")


def builtin_streams() -> dict[str, Traversable]:
    """The recipes that ship with cltune, by stream name (the file name without ``.toml``)."""
    recipes = (p for p in STREAMS_DIR.iterdir() if p.name.endswith(".toml"))
    return {p.name.removesuffix(".toml"): p for p in sorted(recipes, key=lambda p: p.name)}


def resolve_recipe_path(recipe: str | Path | None) -> Path | Traversable:
    """A recipe file path, or the path of a built-in stream name (``default`` if None)."""
    if recipe is None:
        recipe = "default"
    path = Path(recipe)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(
                f"recipe file {str(path)!r} does not exist; give a TOML file or a built-in stream "
                f"({', '.join(builtin_streams())})"
            )
        return path
    streams = builtin_streams()
    if str(recipe) not in streams:
        raise unknown_name_error("stream", str(recipe), streams)
    return streams[str(recipe)]


def read_recipe(recipe: str | Path | None) -> dict[str, Any]:
    """Parse and validate a recipe; returns it with defaults applied to every task."""
    path = resolve_recipe_path(recipe)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(
            f"{path}: malformed TOML: {err}; fix the syntax at that line (key = value, [table], "
            "[[tasks]]; strings in quotes)"
        ) from err
    _check_keys(data, TOP_KEYS, f"{path}")
    defaults = data.get("defaults", {})
    _check_keys(defaults, set(SIZE_KEYS) | {"metric"}, f"{path} [defaults]")
    resolved = {
        "name": data.get("name", path.name.removesuffix(".toml")),
        "seed": _int(data.get("seed", 0), f"{path}: seed", minimum=0),
        "description": data.get("description", ""),
        "tasks": [],
        "general": [],
        "train": data.get("train", {}),
        "strategy": data.get("strategy", {}),
    }
    for key in ("train", "strategy"):
        if not isinstance(resolved[key], dict):
            raise ValueError(f"{path}: [{key}] must be a table")
    for section in ("tasks", "general"):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise ValueError(f"{path}: '{section}' must be an array of tables ([[{section}]])")
        for n, entry in enumerate(entries):
            where = f"{path} [[{section}]] #{n + 1} ({entry.get('name', 'unnamed')})"
            resolved[section].append(_resolve_task(entry, defaults, where))
    if not resolved["tasks"]:
        raise ValueError(f"{path}: the stream has no tasks; add at least one [[tasks]] table")
    return resolved


def _resolve_task(entry: dict, defaults: dict, where: str) -> dict[str, Any]:
    for key in ("name", "source"):
        if key not in entry:
            raise ValueError(f"{where}: missing required key {key!r}")
    source = get_source(entry["source"])
    options = set(inspect.signature(source).parameters) - {"split", "size", "seed"}
    _check_keys(entry, TASK_KEYS | options, where)
    task = {**{k: v for k, v in defaults.items()}, **entry}
    task.setdefault("metric", DEFAULT_METRICS[entry["source"]])
    for key in SIZE_KEYS:
        if task.get(key) is not None:
            task[key] = _int(task[key], f"{where}: {key}", minimum=1)
    labels = task.get("labels")
    if (
        labels is not None
        and labels != "train"
        and not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels))
    ):
        raise ValueError(
            f'{where}: labels must be a list of answer strings or "train" (the train split\'s answers), '
            f"got {labels!r}"
        )
    return task


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            raise unknown_name_error(f"key in {where}:", key, allowed)


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return value


def build_task(spec: dict[str, Any], stream_seed: int) -> Task:
    """Load the train and test splits of one resolved task spec."""
    source = get_source(spec["source"])
    options = {k: v for k, v in spec.items() if k not in TASK_KEYS}
    splits = {}
    for split in ("train", "test"):
        seed = derive_seed(stream_seed, spec["name"], split)
        try:
            splits[split] = source(split, spec.get(f"{split}_size"), seed, **options)
        except (ValueError, FileNotFoundError) as err:
            if type(err) not in (ValueError, FileNotFoundError):
                raise
            raise type(err)(f"task {spec['name']!r} ({split} split): {err}") from err
    return Task(name=spec["name"], train=splits["train"], test=splits["test"], metric=spec["metric"])


def build_stream(resolved: dict[str, Any]) -> Stream:
    seed = resolved["seed"]
    return Stream(
        name=resolved["name"],
        tasks=[build_task(t, seed) for t in resolved["tasks"]],
        general=[build_task(t, seed) for t in resolved["general"]],
        seed=seed,
    )


def load_stream(recipe: str | Path | None = None) -> Stream:
    """Build the stream of a recipe file or built-in stream name (``default`` if None)."""
    return build_stream(read_recipe(recipe))
