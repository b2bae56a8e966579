"""Named strategies: each is a preset of plugins and defaults, registered in one line.

A strategy is a function decorated with ``@register("name")`` (``@cltune.register`` outside the
package) that takes the strategy's own hyper-parameters as keyword arguments and returns a
:class:`Preset`; the decorator is its registry line. Strategies come from three places, each
recorded as the strategy's origin:

- cltune's own, one module each in ``cltune/strategies/methods/`` (imported on first lookup);
- a user's Python file, loaded by path (:func:`load_strategy_file`, ``cltune run --plugins FILE``);
- an installed package's entry points in the group ``cltune.strategies`` (loaded on first lookup):
  the entry point's name is the strategy's name, its object the factory
  (``my-method = "my_package.methods:my_method"``).

A name is registered once: a second origin for a name (a built-in one above all) is an error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from torch import nn

from cltune.models.scopes import set_trainable
from cltune.strategies.plugin import Plugin
from cltune.utils import unknown_name_error


def finetune_scope(model: nn.Module, scope: str) -> nn.Module:
    """Full fine-tuning of ``scope``: everything in it trainable, everything else frozen."""
    set_trainable(model, scope)
    return model


@dataclass
class Preset:
    """What a named strategy contributes to the template.

    ``prepare(model, scope)`` turns the loaded model into the one trained (e.g. wraps it in a PEFT
    adapter) and sets what is trainable (default: the whole scope); ``joint`` trains once on the
    union of all tasks.
    """

    plugins: list[Plugin] = field(default_factory=list)
    prepare: Callable[[nn.Module, str], nn.Module] = finetune_scope
    joint: bool = False


StrategyFactory = Callable[..., Preset]
STRATEGIES: dict[str, StrategyFactory] = {}
ORIGINS: dict[str, str] = {}  # strategy name -> where it was registered from
BUILTIN = "cltune"
ENTRY_POINT_GROUP = "cltune.strategies"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_origin: list[str] = []  # the file or entry point being loaded (innermost last)
_files: dict[Path, list[str]] = {}  # strategy files loaded in this process -> the names they registered


def register(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Register the decorated factory as strategy ``name`` (letters, digits, ``-`` and ``_``)."""
    _check_name(name)

    def wrap(factory: StrategyFactory) -> StrategyFactory:
        _add(name, factory, _origin_of(factory))
        return factory

    return wrap


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"strategy name {name!r}: use letters, digits, '-' and '_' (starting with a letter or "
            "digit), e.g. @cltune.register('my-method')"
        )


def _origin_of(factory: StrategyFactory) -> str:
    if factory.__module__.split(".")[0] == BUILTIN:
        return BUILTIN
    return _origin[-1] if _origin else f"module {factory.__module__}"


def _add(name: str, factory: StrategyFactory, origin: str) -> None:
    if origin != BUILTIN:
        _load_builtin()  # so that a clash with a built-in name is seen whatever is loaded first
    known = ORIGINS.get(name)
    if known is not None and known != origin:
        fix = "choose another name" if known == BUILTIN else "rename one of them"
        where = "a built-in cltune strategy" if known == BUILTIN else f"already registered from {known}"
        raise ValueError(f"strategy {name!r} from {origin} clashes with {where}; {fix}")
    STRATEGIES[name] = factory
    ORIGINS[name] = origin


@contextmanager
def _registering_from(origin: str) -> Iterator[None]:
    _origin.append(origin)
    try:
        yield
    finally:
        _origin.pop()


def load_strategy_file(path: str | Path) -> list[str]:
    """Import the Python file ``path`` (by path: nothing is added to ``sys.path``) and return the
    names of the strategies it registered; a file loaded before is not run again."""
    path = Path(path).expanduser().resolve()
    if path in _files:
        return _files[path]
    if not path.is_file():
        raise FileNotFoundError(
            f"strategy file {str(path)!r} does not exist; give the path of a Python file that "
            "registers strategies with @cltune.register('name')"
        )
    if path.suffix != ".py":
        raise ValueError(f"strategy file {str(path)!r} is not a Python file (*.py)")
    # A module name of its own, so the file can share a name with any installed module.
    module_name = f"_cltune_strategies_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as importlib's recipe: dataclasses and typing look it up there
    before = set(STRATEGIES)
    try:
        with _registering_from(str(path)):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    names = sorted(n for n in STRATEGIES if ORIGINS[n] == str(path) and n not in before)
    if not names:
        raise ValueError(
            f"strategy file {str(path)!r} registers no strategy; decorate a function that returns a "
            "cltune.Preset with @cltune.register('name')"
        )
    _files[path] = names
    return names


def _load_builtin() -> None:
    """Import every module of ``cltune.strategies.methods`` so that their ``@register`` lines run."""
    import importlib
    import pkgutil

    import cltune.strategies.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


@cache
def _load_entry_points() -> None:
    """Register the strategies that installed packages declare in the ``cltune.strategies`` group."""
    _load_builtin()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        package = f"{point.dist.name} {point.dist.version}" if point.dist else "an installed package"
        origin = f"{package} (entry point {point.value})"
        with _registering_from(origin):
            try:
                factory = point.load()
            except Exception as err:
                raise ValueError(
                    f"entry point {point.name!r} of {package} (group {ENTRY_POINT_GROUP}) cannot be "
                    f"loaded: {type(err).__name__}: {err}; fix or uninstall that package"
                ) from err
        if not callable(factory):
            raise ValueError(
                f"entry point {point.name!r} of {package} names {point.value}, which is not a strategy "
                "factory (a function returning a cltune.Preset)"
            )
        if STRATEGIES.get(point.name) is not factory:  # unless its own @register did it already
            _check_name(point.name)
            _add(point.name, factory, origin)


def _load_all() -> None:
    _load_builtin()
    _load_entry_points()


def strategy_names() -> list[str]:
    _load_all()
    return sorted(STRATEGIES)


def strategy_origin(name: str) -> str:
    """Where strategy ``name`` was registered from: ``cltune``, a file, a package or a module."""
    get_factory(name)
    return ORIGINS[name]


def strategy_description(name: str) -> str:
    return (inspect.getdoc(get_factory(name)) or "").splitlines()[0]


def strategy_defaults(name: str) -> dict[str, Any]:
    """The hyper-parameters of a strategy and their default values."""
    return {
        p.name: p.default
        for p in inspect.signature(get_factory(name)).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def get_factory(name: str) -> StrategyFactory:
    _load_all()
    if name not in STRATEGIES:
        raise unknown_name_error("strategy", name, STRATEGIES)
    return STRATEGIES[name]


def build_preset(name: str, **params: Any) -> Preset:
    """The preset of strategy ``name`` with ``params`` (unknown parameters are an error)."""
    factory = get_factory(name)
    defaults = strategy_defaults(name)
    try:
        hints = typing.get_type_hints(factory)
    except NameError as err:
        raise ValueError(
            f"the parameter annotations of strategy {name!r} ({ORIGINS[name]}) name something that is "
            f"not defined ({err}); import it at the top of the module, not only under TYPE_CHECKING"
        ) from err
    for key, value in params.items():
        if key not in defaults:
            raise unknown_name_error(f"parameter of strategy {name!r}:", key, defaults)
        if key in hints:
            _check_type(name, key, value, hints[key])
    return factory(**params)


def sharded_strategies() -> list[str]:
    """The registered strategies (with default parameters) whose plugins all work on sharded
    parameters, i.e. those that run under FSDP and DeepSpeed."""
    return [n for n in strategy_names() if not any(p.full_parameters for p in build_preset(n).plugins)]


# What a value of each simple type may be: an int may stand for a float.
_SIMPLE_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,), type(None): (type(None),)}


def _check_type(strategy: str, key: str, value: Any, hint: Any) -> None:
    """A parameter annotated with simple types (``int``, ``float | str``, ``int | None``) must have
    one of them (an int may stand for a float, a bool only for a bool); others are left to the
    strategy."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    if not all(m in _SIMPLE_TYPES for m in members):
        return
    allowed = tuple(kind for m in members for kind in _SIMPLE_TYPES[m])
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in members):
        names = " | ".join("None" if m is type(None) else m.__name__ for m in members)
        raise ValueError(f"parameter {key} of strategy {strategy!r} must be of type {names}, got {value!r}")
