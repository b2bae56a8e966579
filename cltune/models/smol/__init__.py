"""The built-in ``smol`` model: SmolLM2-135M-Instruct + EfficientNet-Lite0 + an aligned projector.

Importing this package registers its classes with ``transformers``' Auto factories.
"""

from cltune.models.smol.modeling import (
    CltuneSmolConfig,
    CltuneSmolForConditionalGeneration,
    EfficientNetLiteConfig,
    EfficientNetLiteVisionModel,
)

__all__ = [
    "CltuneSmolConfig",
    "CltuneSmolForConditionalGeneration",
    "EfficientNetLiteConfig",
    "EfficientNetLiteVisionModel",
]
