"""One PEFT LoRA adapter trained through the whole stream (Hu et al., ICLR 2022)."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn

from cltune.models.scopes import lora_target_modules
from cltune.strategies.registry import Preset, register


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


@register("lora")
def lora(r: int = 8, alpha: float = 16.0, dropout: float = 0.0, target: list[str] | None = None) -> Preset:
    """A single LoRA adapter on the scope's linear layers, trained on every task in turn."""
    if r < 1:
        raise ValueError(f"lora: r must be a positive integer, got {r}")

    def prepare(model: nn.Module, scope: str) -> nn.Module:
        return get_peft_model(model, lora_config(model, scope, r, alpha, dropout, target))

    return Preset(prepare=prepare)
