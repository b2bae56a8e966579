"""A bank of PEFT LoRA adapters on one base model: one adapter per task, trained one at a time.

The bank wraps the base model in a :class:`peft.PeftModel` that starts with no adapter, so the
strategy's model object never changes: adapters are added to it in place (when an experience
starts, or again when a run resumes) and the base weights stay frozen. Each adapter is saved in
PEFT's own format (``adapter_config.json`` + ``adapter_model.safetensors``), so
``PeftModel.from_pretrained(base, folder)`` or ``model.load_adapter(folder, name)`` reloads it.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

if TYPE_CHECKING:
    from cltune.rundir import RunDirectory

BASE = "__base__"  # PEFT's ``adapter_names`` entry for "no adapter on this row"
_SCRATCH = "cltune_scratch"  # only exists while the empty wrapper is built


def check_adapter_name(name: str) -> str:
    """Refuse names PEFT cannot use: module keys hold no dot, ``__base__`` is reserved, and a part of
    PEFT's key prefix ``lora_`` would clash when the adapter is loaded again."""
    if not name or "." in name or name == BASE or name in "lora_":
        raise ValueError(
            f"{name!r} cannot name a PEFT adapter (no dots, not {BASE!r}, not part of 'lora_'); "
            "rename the task in the stream recipe"
        )
    return name


def lora_layers(model: nn.Module) -> Iterator[LoraLayer]:
    """Every PEFT LoRA layer of ``model``."""
    return (module for module in model.modules() if isinstance(module, LoraLayer))


class AdapterBank:
    """LoRA adapters named after tasks on one frozen base model (see the module docstring)."""

    def __init__(self) -> None:
        self.model: PeftModel | None = None
        self.config: LoraConfig | None = None
        self.names: list[str] = []  # task adapters, in training order

    def wrap(self, model: nn.Module, config: LoraConfig) -> PeftModel:
        """Freeze ``model`` and wrap it in a PeftModel with no adapter yet (the strategy's model).

        ``config`` (target modules resolved on ``model``) is copied for every task adapter.
        """
        self.config = copy.deepcopy(config)
        peft_model = get_peft_model(model, config, adapter_name=_SCRATCH)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "adapter was active and is now deleted": intended
            peft_model.delete_adapter(_SCRATCH)
        peft_model.active_adapter = []  # PEFT's own value for "no adapter left"
        for parameter in peft_model.parameters():
            parameter.requires_grad_(False)
        self.model = peft_model
        return peft_model

    @property
    def peft_model(self) -> PeftModel:
        if self.model is None:
            raise RuntimeError("the adapter bank has no model yet: call wrap(model) in the preset's prepare")
        return self.model

    def add(self, name: str) -> None:
        """Add a fresh, untrained task adapter ``name`` with the bank's LoRA config."""
        self.add_other(name, copy.deepcopy(self.config))
        self.names.append(name)

    def add_other(self, name: str, config: LoraConfig) -> None:
        """Add an adapter that is not a task adapter (e.g. a merge of them) with its own config."""
        check_adapter_name(name)
        if name in self.peft_model.peft_config:
            raise ValueError(f"an adapter named {name!r} already exists; task names must be unique")
        self.peft_model.add_adapter(name, config)

    def activate(self, names: Sequence[str], trainable: Sequence[str] = ()) -> None:
        """Make ``names`` the active adapters (their outputs add up); only ``trainable`` gets gradients."""
        model = self.peft_model
        model.set_adapter(names[0], inference_mode=True)  # also PeftModel's own active_adapter
        model.base_model.set_adapter(list(names), inference_mode=True)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if trainable:
            model.set_requires_grad(list(trainable), requires_grad=True)

    def lora_a(self, name: str) -> dict[str, torch.Tensor]:
        """Adapter ``name``'s ``A`` matrices (``(r, in)``) by module name, as live parameters."""
        return {
            module_name: module.lora_A[name].weight
            for module_name, module in self.peft_model.named_modules()
            if isinstance(module, LoraLayer) and name in module.lora_A
        }

    def save(self, name: str, run_dir: RunDirectory) -> Path:
        """Save adapter ``name`` as the run directory's ``adapters/<name>`` (written whole or not at all)."""
        return run_dir.save_adapter(name, lambda folder: self.write(name, folder))

    def write(self, name: str, folder: Path) -> None:
        """Write adapter ``name`` in PEFT's format into the empty folder ``folder``."""
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            self.peft_model.save_pretrained(scratch, selected_adapters=[name])
            for path in (Path(scratch) / name).iterdir():  # PEFT puts a named adapter in <dir>/<name>
                path.rename(folder / path.name)

    def state_dict(self) -> dict[str, list[str]]:
        """What a resume needs to re-create the adapters (their weights live in the checkpoint)."""
        return {"adapters": list(self.names)}

    def load_state_dict(self, state: dict[str, list[str]]) -> None:
        """Re-create the saved adapters (untrained, the last one active, all frozen) so that the
        checkpoint's weights can load into them."""
        for name in state["adapters"]:
            if name not in self.peft_model.peft_config:
                self.add(name)
        if self.names:
            self.activate(self.names[-1:])
