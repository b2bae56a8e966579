"""O-LoRA (Wang et al., EMNLP 2023 Findings, "Orthogonal Subspace Learning for Language Model Continual
Learning"): a new LoRA adapter per task, trained with earlier adapters active but frozen and with
``λ Σ_{i<t} ‖A_iᵀ A_t‖²`` added to the loss, so each task learns in a subspace orthogonal to the
earlier ones. Evaluation needs no task id: all adapters stay active (their ΔW add up).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from cltune.adapters import AdapterBank, orthogonality_loss
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.adapter_bank import bank_prepare, task_name
from cltune.strategies.plugins.lora import LoraSpec, with_lora_options
from cltune.strategies.registry import Preset, register


class OrthogonalLoraPlugin(Plugin):
    """Add each task's adapter to the active ones; penalise its overlap with the earlier ones."""

    full_parameters = "it adds an adapter per experience and reads earlier adapters' whole factors"

    def __init__(self, bank: AdapterBank, lam: float, squared: bool = False):
        self.bank = bank
        self.lam = lam
        self.squared = squared
        self.overlap: dict[str, float] = {}  # the orthogonality loss per task, after its experience
        self._new: dict[str, Tensor] = {}  # the adapter in training: its live A matrices
        self._old: list[dict[str, Tensor]] = []

    def adapt_model(self, strategy) -> None:
        name = task_name(strategy)
        self.bank.add(name)
        self.bank.activate(self.bank.names, trainable=[name])
        self._new = self.bank.lora_a(name)
        self._old = [self.bank.lora_a(old) for old in self.bank.names[:-1]]

    def before_backward(self, strategy) -> None:
        if self._old and self.lam:
            strategy.loss = strategy.loss + self.lam * orthogonality_loss(self._new, self._old, self.squared)

    def after_training_exp(self, strategy) -> None:
        name = task_name(strategy)
        self.bank.activate(self.bank.names)
        if self._old:
            self.overlap[name] = orthogonality_loss(self._new, self._old, self.squared).item()
            strategy.extra_results["orthogonality_loss"] = self.overlap
        if strategy.run_dir is not None:
            self.bank.save(name, strategy.run_dir)

    def state_dict(self) -> dict[str, Any]:
        return {**self.bank.state_dict(), "overlap": self.overlap}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)
        self.overlap = dict(state["overlap"])
        if self.bank.names:
            self.bank.activate(self.bank.names)


@register("o-lora")
@with_lora_options
def o_lora(lora: LoraSpec, lam: float = 0.5, squared: bool = False) -> Preset:
    """A LoRA adapter per task kept orthogonal to the earlier ones (λ = lam); all active at evaluation.

    The loss is the authors' ``Σ|A_i A_tᵀ|`` (cmnfriend/O-LoRA, ``src/uie_trainer_lora.py``);
    ``squared=True`` uses the paper's ``‖A_i A_tᵀ‖_F²`` instead."""
    if not lam >= 0:
        raise ValueError(f"o-lora: lam (weight of the orthogonality loss) must be >= 0, got {lam!r}")
    lora.check("o-lora")
    bank = AdapterBank()
    return Preset(plugins=[OrthogonalLoraPlugin(bank, lam, squared)], prepare=bank_prepare(bank, lora))
