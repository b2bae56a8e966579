"""The LoRA options of the LoRA presets (r, alpha, dropout, target, scope, lora_options), declared once.

A preset decorated with :func:`with_lora_options` takes ``lora: LoraSpec`` and gets these six
parameters added to its own: ``cltune list`` and ``--set`` see them as the strategy's parameters, and
the preset receives them as one :class:`LoraSpec`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peft import LoraConfig
from torch import nn

from cltune.models.scopes import SCOPES, lora_target_modules

# LoRA options that are parameters of their own, or would train base weights outside the adapter.
_NOT_ADAPTER = ("modules_to_save", "target_modules", "r", "lora_alpha", "lora_dropout")
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
LORA_PARAMETERS = (
    inspect.Parameter("r", _KEYWORD, default=8, annotation=int),
    inspect.Parameter("alpha", _KEYWORD, default=16.0, annotation=float),
    inspect.Parameter("dropout", _KEYWORD, default=0.0, annotation=float),
    inspect.Parameter("target", _KEYWORD, default=None, annotation=list[str] | None),
    inspect.Parameter("scope", _KEYWORD, default=None, annotation=str | None),
    inspect.Parameter("lora_options", _KEYWORD, default=None, annotation=dict[str, Any] | None),
)


def lora_config(
    model: nn.Module,
    scope: str,
    r: int,
    alpha: float,
    dropout: float,
    target: list[str] | None = None,
    **options,
) -> LoraConfig:
    """A PEFT LoraConfig aimed at the linear layers of ``scope`` only (``target`` narrows by suffix)."""
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_modules(model, scope, target),
        **options,
    )


@dataclass
class LoraSpec:
    """A preset's LoRA adapters: rank, alpha, dropout, suffix filter, scope (None: the training
    scope) and other PEFT ``LoraConfig`` options."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target: list[str] | None = None
    scope: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check(self, strategy: str) -> None:
        """Refuse bad values with the strategy's name and the fix."""
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"{strategy}: r must be a positive integer, got {self.r!r} (the LoRA rank)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not self.alpha > 0:
            raise ValueError(f"{strategy}: alpha must be positive, got {self.alpha!r}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0 <= self.dropout < 1
        ):
            raise ValueError(f"{strategy}: dropout must lie in [0, 1), got {self.dropout!r}")
        if self.target is not None and not (
            isinstance(self.target, list) and all(isinstance(t, str) for t in self.target)
        ):
            raise ValueError(
                f"{strategy}: target must be a list of module-name suffixes or None, got {self.target!r}"
            )
        if self.scope is not None and self.scope not in SCOPES:
            raise ValueError(f"{strategy}: scope must be one of {SCOPES} or None, got {self.scope!r}")
        clashes = [key for key in self.options if key in _NOT_ADAPTER]
        if self.options.get("bias", "none") != "none":
            clashes.append("bias")
        if clashes:
            raise ValueError(
                f"{strategy}: LoRA options {clashes} are not allowed here: r, alpha, dropout and target are "
                "parameters of their own, and modules_to_save or a bias other than 'none' would train base "
                "weights outside the adapters"
            )
        try:
            LoraConfig(target_modules=["probe"], **self.options)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{strategy}: bad LoRA option in {self.options}: {err} (see peft.LoraConfig)"
            ) from err

    def config(self, model: nn.Module, train_scope: str) -> LoraConfig:
        """The LoraConfig for ``model``'s linear layers of ``scope`` (the training scope if None)."""
        return lora_config(
            model, self.scope or train_scope, self.r, self.alpha, self.dropout, self.target, **self.options
        )


def with_lora_options(factory: Callable[..., Any]) -> Callable[..., Any]:
    """Give a preset factory that takes ``lora: LoraSpec`` the shared LoRA parameters instead.

    The decorated factory takes its own parameters (but ``lora``) and :data:`LORA_PARAMETERS`, all
    by keyword, and calls ``factory(lora=LoraSpec(...), **own)``; the strategy checks the spec.
    """
    own = [
        p.replace(kind=_KEYWORD) for p in inspect.signature(factory).parameters.values() if p.name != "lora"
    ]

    @functools.wraps(factory)
    def preset(**params: Any) -> Any:
        lora = {p.name: params.pop(p.name, p.default) for p in LORA_PARAMETERS}
        options = lora.pop("lora_options")
        return factory(lora=LoraSpec(**lora, options=dict(options or {})), **params)

    annotations = {k: v for k, v in factory.__annotations__.items() if k != "lora"}
    preset.__annotations__ = {**annotations, **{p.name: p.annotation for p in LORA_PARAMETERS}}
    preset.__signature__ = inspect.signature(factory).replace(parameters=[*own, *LORA_PARAMETERS])
    return preset
