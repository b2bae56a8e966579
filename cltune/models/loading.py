"""Load any Hugging Face image-text-to-text model and its processor, or a built-in model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cltune.models.feature_cache import cache_tower_features

BUILTIN_MODELS = {
    "tiny": "a real LlavaForConditionalGeneration (CLIP + Llama, ~0.9M parameters), pre-trained "
    "by cltune on the stream's general tasks on first use and cached",
    "smol": "SmolLM2-135M-Instruct + ImageNet EfficientNet-Lite0 + a projector (~140M parameters), "
    "assembled from PyPI packages; the projector is aligned once on a caption mixture and cached",
}


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    pretrain_tasks: list | None = None,
    seed: int = 0,
    progress: bool = True,
    feature_memo: bool = True,
) -> tuple[nn.Module, Any]:
    """Return ``(model, processor)`` for a built-in name, a local folder or a Hub id.

    ``feature_memo``: memoise the vision tower's outputs per image whenever that cannot change
    them (:func:`~cltune.models.feature_cache.cache_tower_features`); ``False`` returns the model
    as transformers loaded it. A :class:`~cltune.strategies.template.Template` turns the memo on
    or off by its training option ``feature_memo``.

    ``pretrain_tasks`` are the general tasks the built-in ``tiny`` model is pre-trained on
    (the default stream's if None); ``smol`` (aligned on a fixed caption mixture), hub and local
    models ignore them. ``progress``: the tiny model's pre-training bar or smol's alignment bar
    (when not cached).
    """
    model, processor = _load(name_or_path, dtype, pretrain_tasks, seed, progress)
    if feature_memo:
        cache_tower_features(model)
    return model, processor


def _load(
    name_or_path: str, dtype: torch.dtype | str | None, pretrain_tasks: list | None, seed: int, progress: bool
) -> tuple[nn.Module, Any]:
    if name_or_path == "tiny":
        from cltune.models.tiny import load_tiny

        return load_tiny(pretrain_tasks, seed=seed, progress=progress)
    if name_or_path == "smol":
        from cltune.models.smol.align import load_smol

        return load_smol(seed=seed, progress=progress)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import cltune.models.smol  # noqa: F401  (registers smol's classes, so saved smol folders load)

    if _looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model folder {str(path)!r} does not exist; give a folder written by "
                f"save_pretrained, a Hub id, or a built-in model ({', '.join(BUILTIN_MODELS)})"
            )
        name_or_path = str(path)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype or "auto")
    except OSError as err:
        raise OSError(
            f"cannot load model {name_or_path!r}: not a local model folder, and the Hugging Face Hub "
            f"did not provide it ({err}). Check the id, your network, or use a built-in model "
            f"({', '.join(BUILTIN_MODELS)})"
        ) from err
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, processor
