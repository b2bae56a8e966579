"""Named strategies: each is a preset of plugins and defaults, registered in one line.

A strategy file in ``cltune/strategies/methods/`` defines a function decorated with
``@register("name")`` that takes the strategy's own hyper-parameters as keyword arguments and returns
a :class:`Preset`; the decorator is its registry line (every module of ``methods`` is imported on
first lookup).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
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


def register(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    def wrap(factory: StrategyFactory) -> StrategyFactory:
        STRATEGIES[name] = factory
        return factory

    return wrap


def _load_builtin() -> None:
    """Import every module of ``cltune.strategies.methods`` so that their ``@register`` lines run."""
    import importlib
    import pkgutil

    import cltune.strategies.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def strategy_names() -> list[str]:
    _load_builtin()
    return sorted(STRATEGIES)


def strategy_description(name: str) -> str:
    _load_builtin()
    return (inspect.getdoc(STRATEGIES[name]) or "").splitlines()[0]


def strategy_defaults(name: str) -> dict[str, Any]:
    """The hyper-parameters of a strategy and their default values."""
    return {
        p.name: p.default
        for p in inspect.signature(get_factory(name)).parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def get_factory(name: str) -> StrategyFactory:
    _load_builtin()
    if name not in STRATEGIES:
        raise unknown_name_error("strategy", name, STRATEGIES)
    return STRATEGIES[name]


def build_preset(name: str, **params: Any) -> Preset:
    """The preset of strategy ``name`` with ``params`` (unknown parameters are an error)."""
    factory = get_factory(name)
    defaults = strategy_defaults(name)
    annotations = {p.name: p.annotation for p in inspect.signature(factory).parameters.values()}
    for key, value in params.items():
        if key not in defaults:
            raise unknown_name_error(f"parameter of strategy {name!r}:", key, defaults)
        _check_type(name, key, value, annotations[key])
    return factory(**params)


_SIMPLE_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "None": (type(None),)}


def _check_type(strategy: str, key: str, value: Any, annotation: Any) -> None:
    """A parameter annotated with simple types (``int``, ``float | str``, ``int | None``) must have
    one of them (an int may stand for a float, a bool only for a bool); others are left to the
    strategy."""
    names = [part.strip() for part in str(annotation).split("|")]
    if not all(n in _SIMPLE_TYPES for n in names):
        return
    allowed = tuple(kind for n in names for kind in _SIMPLE_TYPES[n])
    if not isinstance(value, allowed) or (isinstance(value, bool) and "bool" not in names):
        raise ValueError(
            f"parameter {key} of strategy {strategy!r} must be of type {' | '.join(names)}, got {value!r}"
        )


def sharded_strategies() -> list[str]:
    """The registered strategies (with default parameters) whose plugins all work on sharded
    parameters, i.e. those that run under FSDP and DeepSpeed."""
    return [n for n in strategy_names() if not any(p.full_parameters for p in build_preset(n).plugins)]
