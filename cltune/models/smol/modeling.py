"""The ``smol`` model as registered Hugging Face classes.

``CltuneSmolForConditionalGeneration`` is a :class:`~transformers.LlavaForConditionalGeneration`
(the LLaVA recipe: Liu et al., "Visual Instruction Tuning", NeurIPS 2023) whose vision tower is an
EfficientNet-Lite0 (Tan & Le, ICML 2019) and whose language model is SmolLM2-135M-Instruct. The
tower's last feature map (7×7×1280 at 224 px) is average-pooled to ``grid × grid`` tokens, which
the two-layer projector maps into the LM's embedding space. Registration with ``AutoConfig``,
``AutoModel`` and ``AutoModelForImageTextToText`` makes ``from_pretrained``/``save_pretrained``,
``generate`` and PEFT work on it like on any LLaVA.

A frozen tower (no parameter requires grad) always runs in eval mode: its batch-norm statistics
never move. cltune memoises its outputs per image (:mod:`cltune.models.feature_cache`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

VISION_MODEL_TYPE = "cltune_efficientnet_lite"
MODEL_TYPE = "cltune_smol"


class EfficientNetLiteConfig(PretrainedConfig):
    """EfficientNet-Lite vision tower: ``variant`` (``efficientnet-lite0``), input size, token grid."""

    model_type = VISION_MODEL_TYPE

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        image_size: int = 224,
        grid: int = 2,
        hidden_size: int = 1280,
        **kwargs,
    ):
        self.variant = variant
        self.image_size = image_size
        self.grid = grid
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class EfficientNetLiteVisionModel(PreTrainedModel):
    """EfficientNet-Lite feature extractor returning ``grid²`` tokens of ``hidden_size`` per image."""

    config_class = EfficientNetLiteConfig
    main_input_name = "pixel_values"
    base_model_prefix = "efficientnet"
    input_modalities = ("image",)

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name(config.variant)
        del self.net._fc  # the ImageNet classifier is not part of the tower
        self.pool = nn.AdaptiveAvgPool2d(config.grid)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # weights come from the ImageNet checkpoint
        return

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool = True, **kwargs
    ) -> BaseModelOutputWithPooling:
        if self.frozen:
            self.net.eval()
        features = self.net.extract_features(pixel_values.to(next(self.parameters()).dtype))
        tokens = self.pool(features).flatten(2).transpose(1, 2)  # (batch, grid², hidden)
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=tokens.mean(1), hidden_states=(tokens,)
        )


class CltuneSmolConfig(LlavaConfig):
    """A LLaVA config with an EfficientNet-Lite vision tower (``vision_feature_select_strategy='full'``)."""

    model_type = MODEL_TYPE


class CltuneSmolForConditionalGeneration(LlavaForConditionalGeneration):
    """SmolLM2 + EfficientNet-Lite0 + projector; a LLaVA in every other respect."""

    config_class = CltuneSmolConfig


def register() -> None:
    """Register the classes with the Auto factories (idempotent)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if VISION_MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(VISION_MODEL_TYPE, EfficientNetLiteConfig)
        AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteVisionModel)
    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, CltuneSmolConfig)
        AutoModelForImageTextToText.register(CltuneSmolConfig, CltuneSmolForConditionalGeneration)


register()
