"""Selective tuning: parameter importance, masks, and exact masked updates.

- ``importance``: measures registered by name with what each needs (``register_importance``,
  ``importance_measure``, ``get_importance``), SI tracker, SPIDER rule.
- ``masks`` / ``hft``: top-``ratio`` masks per tensor, layer or globally; HFT; random control.
- ``packing``: masks stored at 1 bit per parameter; ``overlap``: density and Jaccard.
- ``masked_update``: keep every entry outside a mask bit-identical while an optimizer runs.
"""

from .hft import hft_masks, hft_select
from .importance import (
    IMPORTANCE_MEASURES,
    Measure,
    SITracker,
    get_importance,
    importance_measure,
    importance_names,
    load_importances,
    register_importance,
    save_importances,
    spider_merge_,
    spider_share,
    spider_shares,
)
from .masked_update import MaskedUpdate, mask_gradients_, zero_state_outside_
from .masks import check_ratio, layer_of, n_keep, random_masks, topk_masks
from .overlap import density, density_per_tensor, jaccard, jaccard_per_tensor
from .packing import load_masks, pack_bits, save_masks, unpack_bits

__all__ = [
    "IMPORTANCE_MEASURES",
    "MaskedUpdate",
    "Measure",
    "SITracker",
    "check_ratio",
    "density",
    "density_per_tensor",
    "get_importance",
    "hft_masks",
    "hft_select",
    "importance_measure",
    "importance_names",
    "jaccard",
    "jaccard_per_tensor",
    "layer_of",
    "load_importances",
    "load_masks",
    "mask_gradients_",
    "n_keep",
    "pack_bits",
    "random_masks",
    "register_importance",
    "save_importances",
    "save_masks",
    "spider_merge_",
    "spider_share",
    "spider_shares",
    "topk_masks",
    "unpack_bits",
    "zero_state_outside_",
]
