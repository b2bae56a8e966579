"""Per-task PEFT LoRA adapters on one frozen base model, task routing, and O-LoRA's orthogonality loss."""

from cltune.adapters.bank import BASE, AdapterBank, check_adapter_name, lora_layers
from cltune.adapters.features import prompt_features
from cltune.adapters.orthogonal import orthogonality_loss
from cltune.adapters.routing import PrototypeRouter, route_counts

__all__ = [
    "BASE",
    "AdapterBank",
    "PrototypeRouter",
    "check_adapter_name",
    "lora_layers",
    "orthogonality_loss",
    "prompt_features",
    "route_counts",
]
