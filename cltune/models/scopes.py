"""Module scopes of an image-text-to-text model, resolved per model family.

A scope is ``language_model`` (text decoder and LM head), ``vision_tower``, ``projector`` or
``all``. Each family's parts are found by their attribute paths, never by bare suffixes, so a
``q_proj`` inside the vision tower is never picked when the language model is asked for.
"""

from __future__ import annotations

from torch import nn

from cltune.utils import unknown_name_error

SCOPES = ("language_model", "vision_tower", "projector", "all")

# Attribute paths per part, tried in order (LLaVA / LLaVA-OneVision / InternVL / Gemma3 / PaliGemma,
# Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM, Llama4, and cltune's smol). The first path that exists
# on the model is the part.
PART_PATHS = {
    "language_model": ("model.language_model", "model.text_model", "language_model", "text_model"),
    "vision_tower": (
        "model.vision_tower",
        "model.visual",
        "model.vision_model",
        "vision_tower",
        "visual",
        "vision_model",
    ),
    "projector": (
        "model.multi_modal_projector",
        "model.visual.merger",
        "model.connector",
        "multi_modal_projector",
        "connector",
    ),
}
# Parameters outside the part's module that belong to it: LLaVA-NeXT / OneVision's learned row separator.
PART_PARAMETERS = {"projector": ("model.image_newline", "image_newline")}
LM_HEAD_PATHS = ("lm_head", "model.lm_head", "language_model.lm_head")  # the last: Llama4
# nn.Linear subclasses that are not plain linears: Llama4's MoE router returns (scores, logits), which
# PEFT's LoRA layer cannot wrap.
NOT_LORA_LINEARS = ("Llama4Router",)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself).

    ``PeftModel.get_base_model`` without its look-up of the active adapter's config, which fails
    on a model with no active adapter (an adapter bank sets ``active_adapter = []``).
    """
    if not callable(getattr(model, "get_base_model", None)):
        return model
    from peft.tuners.tuners_utils import BaseTuner

    tuner = model.base_model
    return tuner.model if isinstance(tuner, BaseTuner) else tuner  # prompt learning wraps no tuner


def _find(model: nn.Module, paths: tuple[str, ...]) -> str | None:
    names = dict(model.named_modules())
    return next((p for p in paths if p in names), None)


def part_module(model: nn.Module, part: str) -> nn.Module | None:
    """The module of ``part`` (a key of :data:`PART_PATHS`) on the unwrapped model, or None."""
    base = unwrap(model)
    found = _find(base, PART_PATHS[part])
    return base.get_submodule(found) if found is not None else None


def scope_prefixes(model: nn.Module, scope: str) -> list[str]:
    """Module-name prefixes (on the unwrapped model) that make up ``scope``, plus the names of its
    :data:`PART_PARAMETERS`."""
    if scope not in SCOPES:
        raise unknown_name_error("scope", scope, SCOPES)
    base = unwrap(model)
    if scope == "all":
        return [""]
    found = _find(base, PART_PATHS[scope])
    if found is None:
        raise ValueError(
            f"cannot find the {scope} of {type(base).__name__}: none of {PART_PATHS[scope]} exists. "
            "Add the family's attribute path to cltune.models.scopes.PART_PATHS"
        )
    parameters = dict(base.named_parameters())
    prefixes = [found, *(name for name in PART_PARAMETERS.get(scope, ()) if name in parameters)]
    if scope == "language_model":
        head = _find(base, LM_HEAD_PATHS)
        prefixes += [head] if head else []
    return prefixes


def _excluded_prefixes(model: nn.Module, scope: str) -> list[str]:
    """Parts nested inside ``scope`` that belong to another scope (Qwen2-VL's merger)."""
    if scope != "vision_tower":
        return []
    projector = _find(unwrap(model), PART_PATHS["projector"])
    return [projector] if projector else []


def _in(name: str, prefixes: list[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def scope_parameters(model: nn.Module, scope: str) -> dict[str, nn.Parameter]:
    """Parameters of ``scope``, keyed by their name on the unwrapped model."""
    prefixes, excluded = scope_prefixes(model, scope), _excluded_prefixes(model, scope)
    return {
        name: p
        for name, p in unwrap(model).named_parameters()
        if _in(name, prefixes) and not _in(name, excluded)
    }


def lora_target_modules(model: nn.Module, scope: str, suffixes: list[str] | None = None) -> list[str]:
    """Full names of the ``nn.Linear`` layers in ``scope`` (LM head, embeddings and
    :data:`NOT_LORA_LINEARS` excluded).

    ``suffixes`` (e.g. ``["q_proj", "v_proj"]``) narrows them, within the scope only.
    """
    prefixes, excluded = scope_prefixes(model, scope), _excluded_prefixes(model, scope)
    head = _find(unwrap(model), LM_HEAD_PATHS)
    targets = [
        name
        for name, module in unwrap(model).named_modules()
        if isinstance(module, nn.Linear)
        and type(module).__name__ not in NOT_LORA_LINEARS
        and _in(name, prefixes)
        and not _in(name, excluded)
        and name != head
        and (suffixes is None or name.rsplit(".", 1)[-1] in suffixes)
    ]
    if not targets:
        raise ValueError(f"no linear layers in scope {scope!r}" + (f" match {suffixes}" if suffixes else ""))
    return targets


def set_trainable(model: nn.Module, scope: str) -> dict[str, nn.Parameter]:
    """Freeze everything but ``scope``; returns the trainable parameters."""
    trainable = scope_parameters(model, scope)
    for name, p in unwrap(model).named_parameters():
        p.requires_grad_(name in trainable)
    return trainable
