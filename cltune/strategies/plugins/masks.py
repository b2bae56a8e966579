"""Selective tuning as a plugin: choose a mask per experience, then update only inside it, exactly.

A :class:`MaskPlugin` subclass says how the masks are chosen (``choose_masks``); the base class
confines AdamW to them with :class:`~cltune.selective.MaskedUpdate` (entries outside the mask
stay bit-identical, momentum and weight decay included), saves them at 1 bit per parameter as
``<run>/analysis/masks-<task>.safetensors`` (read by ``cltune report`` for the overlap figure)
and records their density and Jaccard overlap with the previous experience's masks in
``results.json`` ``extra["masks"]``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from torch import Tensor, nn

from cltune import distributed
from cltune.selective import MaskedUpdate, density, jaccard, pack_bits, save_masks, unpack_bits
from cltune.selective.masks import Masks
from cltune.strategies.calibration import scope_params
from cltune.strategies.plugin import Plugin

GRANULARITIES = ("tensor", "layer", "global")


def check_mask_options(method: str, ratio: float | str, granularity: str, allow_auto: bool = True) -> None:
    """Raise a clear error for a ratio outside (0, 1] (or not "auto") or an unknown granularity."""
    expected = "a number in (0, 1]" + (" or 'auto'" if allow_auto else "")
    if not (allow_auto and ratio == "auto"):
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise ValueError(f"{method}: ratio (the fraction updated) must be {expected}, got {ratio!r}")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"{method}: ratio (the fraction updated) must be {expected}, got {ratio}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"{method}: granularity must be one of {GRANULARITIES}, got {granularity!r}")


def mask_digest(masks: Masks) -> str:
    """SHA-256 of a set of masks (names, shapes and bits): equal digests, equal masks."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].detach().cpu()
        digest.update(f"{name}{list(mask.shape)}".encode())
        digest.update(pack_bits(mask).numpy().tobytes())
    return digest.hexdigest()


def same_on_every_process(masks: Masks, experience: str) -> list[str]:
    """The digest of each process's own masks (gathered over processes); a RuntimeError if they differ."""
    digests = distributed.gather_object(mask_digest(masks))
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"the masks of experience {experience!r} differ between processes ({digests}); "
            "a selective strategy must choose them from importances reduced over processes "
            "(cltune.strategies.calibration.experience_importance)"
        )
    return digests


class MaskRecorder:
    """Saves each experience's masks and keeps their statistics (packed, 1 bit per entry)."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, float | None]] = {}
        self._previous: dict[str, tuple[Tensor, list[int]]] = {}  # name -> (packed bits, shape)

    def record(self, strategy, masks: Masks, **info: float) -> None:
        previous = {name: unpack_bits(bits, shape) for name, (bits, shape) in self._previous.items()}
        comparable = set(previous) == set(masks)
        cpu = {name: m.detach().cpu() for name, m in masks.items()}
        name = strategy.experience.name
        self.stats[name] = {
            "density": density(cpu),
            "jaccard_previous": jaccard(previous, cpu) if previous and comparable else None,
            **info,
        }
        self._previous = {n: (pack_bits(m), list(m.shape)) for n, m in cpu.items()}
        if distributed.active():
            self.stats[name]["process_digests"] = same_on_every_process(cpu, name)
        strategy.extra_results["masks"] = dict(self.stats)
        if strategy.run_dir is not None:
            strategy.run_dir.save_masks(name, lambda path: save_masks(path, cpu))

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats, "previous": self._previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = dict(state["stats"])
        self._previous = dict(state["previous"])


class MaskPlugin(Plugin):
    """Base of the mask strategies: ``choose_masks`` at the start of each experience, then an
    exact masked AdamW until its end. Extra memory: one bool per trainable parameter."""

    full_parameters = "it chooses masks over whole parameters and masks their gradients before each update"

    method = "mask"

    def __init__(self) -> None:
        self.recorder = MaskRecorder()
        self._update: MaskedUpdate | None = None

    def choose_masks(self, strategy, params: dict[str, nn.Parameter]) -> tuple[Masks, dict[str, float]]:
        """The masks of this experience (True = updated) and facts to record beside them."""
        raise NotImplementedError

    def before_training_exp(self, strategy) -> None:
        params = scope_params(strategy, self.method)
        masks, info = self.choose_masks(strategy, params)
        self._update = MaskedUpdate(strategy.optimizer, params, masks)
        self.recorder.record(strategy, masks, **info)

    def after_backward(self, strategy) -> None:
        self._update.after_backward()

    def before_update(self, strategy) -> None:
        self._update.before_update()

    def after_training_exp(self, strategy) -> None:
        self._update.close()
        self._update = None

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state)
