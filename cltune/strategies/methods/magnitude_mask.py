"""Magnitude masks: freeze the largest weights, which carry the pre-trained knowledge; tune the rest.

The weight-magnitude saliency of pruning (Han et al., NeurIPS 2015, "Learning both Weights and
Connections for Efficient Neural Networks"; :func:`cltune.selective.importance.magnitude`) used
the other way round: large-|θ| entries are protected. At the start of each experience the
``ratio`` entries with the *smallest* |θ| (per tensor by default) are the only ones AdamW may
change; the rest stay bit-identical. Data-free.
"""

from __future__ import annotations

from torch import nn

from cltune.selective import topk_masks
from cltune.selective.importance import magnitude
from cltune.selective.masks import Granularity, Masks
from cltune.strategies.plugins.masks import MaskPlugin, check_mask_options
from cltune.strategies.registry import Preset, register


class MagnitudeMaskPlugin(MaskPlugin):
    method = "magnitude-mask"

    def __init__(self, ratio: float, granularity: Granularity):
        super().__init__()
        self.ratio = ratio
        self.granularity = granularity

    def choose_masks(self, strategy, params: dict[str, nn.Parameter]) -> tuple[Masks, dict[str, float]]:
        smallest_first = {name: -s for name, s in magnitude(None, params).items()}
        return topk_masks(smallest_first, self.ratio, self.granularity), {"ratio": self.ratio}


@register("magnitude-mask")
def magnitude_mask(ratio: float = 0.5, granularity: str = "tensor") -> Preset:
    """Freeze the largest weights (top 1-ratio by |θ| at the start of each task), tune the rest."""
    check_mask_options("magnitude-mask", ratio, granularity, allow_auto=False)
    return Preset(plugins=[MagnitudeMaskPlugin(float(ratio), granularity)])
