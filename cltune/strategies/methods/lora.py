"""One PEFT LoRA adapter trained through the whole stream (Hu et al., ICLR 2022)."""

from __future__ import annotations

from peft import get_peft_model
from torch import nn

from cltune.strategies.plugins.lora import LoraSpec, with_lora_options
from cltune.strategies.registry import Preset, register


@register("lora")
@with_lora_options
def lora(lora: LoraSpec) -> Preset:
    """A single LoRA adapter on the scope's linear layers, trained on every task in turn."""
    lora.check("lora")

    def prepare(model: nn.Module, scope: str) -> nn.Module:
        return get_peft_model(model, lora.config(model, scope))

    return Preset(prepare=prepare)
