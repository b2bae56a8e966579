"""What the presets with one PEFT adapter per task share: the bank's ``prepare`` and the task's name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cltune.adapters import AdapterBank
from cltune.strategies.plugins.lora import LoraSpec


def bank_prepare(bank: AdapterBank, spec: LoraSpec) -> Callable[[nn.Module, str], nn.Module]:
    """The preset's ``prepare``: wrap the loaded model in the bank's PeftModel (no adapter yet)."""

    def prepare(model: nn.Module, scope: str) -> nn.Module:
        return bank.wrap(model, spec.config(model, scope))

    return prepare


def task_name(strategy) -> str:
    """The one task of the current experience, whose adapter is trained; an error for a joint experience."""
    tasks = strategy.experience.tasks
    if len(tasks) != 1:
        raise ValueError("adapter strategies train one adapter per task; a joint experience has several")
    return tasks[0].name
