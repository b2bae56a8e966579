"""Half Fine-Tuning: each experience trains a random half of every layer's weight matrices.

Hui et al., ACL 2025, "HFT: Half Fine-Tuning for Large Language Models" (arXiv:2404.18466):
per experience and per layer, half of the attention matrices and half of the MLP matrices are
frozen at their current values (:func:`cltune.selective.hft_select`, redrawn from (seed,
experience)); vectors (norms, biases) stay trainable. Whole matrices are frozen, so the plugin
sets ``requires_grad=False`` on them before the optimizer is made: they get no gradient and no
AdamW state (faster than a fine-tune, and exact), and their whole-tensor masks are saved like
the other mask strategies'.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cltune.selective import hft_masks, hft_select
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.masks import MaskRecorder, check_mask_options
from cltune.strategies.registry import Preset, register
from cltune.utils import derive_seed


class HalfFineTuningPlugin(Plugin):
    full_parameters = "it freezes half of each layer's parameters by name before every experience"

    def __init__(self, ratio: float):
        self.ratio = ratio
        self.recorder = MaskRecorder()
        self._scope: list[str] | None = None

    def _seed(self, strategy) -> int:
        return derive_seed(strategy.config.seed, "hft", strategy.experience.index)

    def _scope_params(self, strategy) -> dict[str, nn.Parameter]:
        named = dict(strategy.model.named_parameters())
        if self._scope is None:
            self._scope = [name for name, p in named.items() if p.requires_grad]
            if not self._scope:
                raise ValueError(
                    f"hft: the scope {strategy.config.scope!r} has no trainable parameters to choose from"
                )
        return {name: named[name] for name in self._scope}

    def adapt_model(self, strategy) -> None:
        params = self._scope_params(strategy)
        trained = hft_select(params, self.ratio, self._seed(strategy))
        for name, p in params.items():
            p.requires_grad_(name in trained or p.dim() != 2)

    def before_training_exp(self, strategy) -> None:
        masks = hft_masks(self._scope_params(strategy), self.ratio, self._seed(strategy))
        self.recorder.record(strategy, masks, ratio=self.ratio)

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state)


@register("hft")
def hft(ratio: float = 0.5) -> Preset:
    """Half fine-tuning: a random half of each layer's weight matrices is frozen per task."""
    check_mask_options("hft", ratio, "tensor", allow_auto=False)
    return Preset(plugins=[HalfFineTuningPlugin(float(ratio))])
