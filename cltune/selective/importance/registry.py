"""The importance measures by name, each with what it needs: one registry entry per measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cltune.utils import register_unique, unknown_name_error


@dataclass(frozen=True)
class Measure:
    """An importance measure and what it needs.

    ``compute(model, params, batches, **options) -> {name: score}``, or a tracker class for a
    measure ``tracked`` during training (SI) rather than computed from batches. ``batches``: it
    scores from calibration batches (False: data-free); ``reference``: it compares with a reference
    θ, the ``pretrained=`` option; ``partial``: it scores only some parameters of the scope
    (e.g. ``nn.Linear`` weights).
    """

    name: str
    compute: Callable
    batches: bool = True
    reference: bool = False
    tracked: bool = False
    partial: bool = False

    def mask_obstacle(self) -> str | None:
        """Why this measure cannot choose a mask at the start of an experience from the model and
        its batches alone (what ``importance-mask`` needs), or None when it can."""
        if self.tracked:
            return "it is tracked during training"
        if self.reference:
            return "it needs a reference θ (pretrained=)"
        if self.partial:
            return "it scores only some parameters of the scope"
        return None


IMPORTANCE_MEASURES: dict[str, Measure] = {}


def register_importance(
    name: str, *, batches: bool = True, reference: bool = False, tracked: bool = False, partial: bool = False
) -> Callable[[Callable], Callable]:
    """Register a measure as ``name``, with what it needs (see :class:`Measure`); used as a decorator
    or called on the function (``register_importance("mas")(mas)``)."""

    def wrap(compute: Callable) -> Callable:
        register_unique(
            IMPORTANCE_MEASURES,
            "importance measure",
            name,
            Measure(name, compute, batches, reference, tracked, partial),
        )
        return compute

    return wrap


def importance_measure(name: str) -> Measure:
    """The measure registered as ``name`` with what it needs; ValueError naming the known ones otherwise."""
    if name not in IMPORTANCE_MEASURES:
        raise unknown_name_error("importance measure", name, IMPORTANCE_MEASURES)
    return IMPORTANCE_MEASURES[name]


def get_importance(name: str) -> Callable:
    """The function (or tracker class) of the measure registered as ``name``."""
    return importance_measure(name).compute


def importance_names(keep: Callable[[Measure], bool] = lambda measure: True) -> list[str]:
    """The names of the registered measures that ``keep`` accepts, in registration order."""
    return [name for name, measure in IMPORTANCE_MEASURES.items() if keep(measure)]
