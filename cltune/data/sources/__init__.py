"""Task sources: each turns a few recipe options into the train and test splits of a Task.

A source is a function ``(split, **options) -> datasets.Dataset`` registered by name with
:func:`register_source`. Subsetting to the recipe's sizes is done by the caller.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets

SourceFn = Callable[..., datasets.Dataset]
SOURCES: dict[str, SourceFn] = {}
DEFAULT_METRICS: dict[str, str] = {}


def register_source(name: str, metric: str = "exact_match") -> Callable[[SourceFn], SourceFn]:
    def wrap(fn: SourceFn) -> SourceFn:
        SOURCES[name] = fn
        DEFAULT_METRICS[name] = metric
        return fn

    return wrap


def get_source(name: str) -> SourceFn:
    from cltune.utils import unknown_name_error

    _load_builtin_sources()
    if name not in SOURCES:
        raise unknown_name_error("task source", name, SOURCES)
    return SOURCES[name]


def _load_builtin_sources() -> None:
    from cltune.data.sources import (  # noqa: F401
        captions,
        cifar10,
        digits,
        easyvqa,
        hf,
        llava_json,
        lm_facts,
        lm_text,
        mnist,
    )
