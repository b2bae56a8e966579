"""Where a parameter sits: its module, its transformer layer and its module type.

Analyses that aggregate per-parameter numbers (importance, weight drift) group them into a
layer × module-type table. A parameter name such as
``model.language_model.layers.3.self_attn.q_proj.weight`` has the layer
``language_model.layers.3`` and the module type ``self_attn.q_proj``. PEFT names are read as the
base model's: the ``base_model.model.`` prefix, ``.base_layer`` and the LoRA factors
(``lora_A.<adapter>``) are removed, so an adapter's parameters fall in the cell of the module
they adapt. Parameters outside any layer (embeddings, final norm, LM head, projector) get their
parent module as the layer, e.g. ``language_model`` / ``embed_tokens``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pandas as pd

from cltune.selective.masks import layer_of

PEFT_PREFIX = "base_model.model."
_ADAPTER_PART = re.compile(r"\.(?:lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector)(?:\.[^.]+)?(?=\.|$)")
_SUFFIXES = (".weight", ".bias")
TOP_LEVEL = "(top)"


class Place(NamedTuple):
    """A parameter's module (base-model name), layer and module type."""

    module: str
    layer: str
    module_type: str


def base_name(name: str) -> str:
    """The parameter's name on the base model: PEFT prefix, ``base_layer`` and adapters removed."""
    name = name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
    return _ADAPTER_PART.sub("", name)


def _short(path: str) -> str:
    return path.removeprefix("model.") if path != "model" else path


def place(name: str) -> Place:
    """Module, layer and module type of parameter ``name`` (see the module docstring)."""
    base = base_name(name)
    module = next((base[: -len(s)] for s in _SUFFIXES if base.endswith(s)), base)
    layer = layer_of(module + ".")
    if layer is not None:
        return Place(module, _short(layer), module[len(layer) + 1 :] or "(layer)")
    parent, dot, leaf = module.rpartition(".")
    return Place(module, _short(parent) if dot else TOP_LEVEL, leaf)


def natural_key(text: str) -> tuple:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def pivot(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """A layer × module-type table of column ``value`` of a frame with ``layer``/``module_type``.

    Rows and columns are in natural order; a cell with no parameter is NaN.
    """
    table = frame.pivot_table(index="layer", columns="module_type", values=value, aggfunc="first")
    rows = sorted(table.index, key=natural_key)
    columns = sorted(table.columns, key=natural_key)
    table = table.loc[rows, columns]
    table.columns.name = None
    return table
