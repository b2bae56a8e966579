"""Parameter-importance measures, registered by name.

Every function entry has the shape ``measure(model, params, batches, **kw) -> {name: score}``:
``params`` is the trainable scope (only those names are scored), ``batches`` an iterable of
``model(**batch)`` dicts with ``labels`` (−100 outside the answer), and ``dtype`` the dtype
of the returned scores (float32 by default; ``torch.bfloat16`` halves their memory). The
``si`` entry is a class, ``SITracker``, because Synaptic Intelligence is measured during
training rather than from batches.
"""

from __future__ import annotations

from collections.abc import Callable

from cltune.utils import unknown_name_error

from .drift import drift
from .fisher import fisher
from .gradient import accumulate_, gradient
from .magnitude import magnitude
from .mas import mas
from .obs import obs
from .si import SITracker
from .spider import spider, spider_merge_, spider_share, spider_shares
from .storage import load_importances, save_importances

IMPORTANCE_MEASURES: dict[str, Callable] = {
    "magnitude": magnitude,
    "gradient": gradient,
    "fisher": fisher,
    "mas": mas,
    "si": SITracker,
    "spider": spider,
    "drift": drift,
    "obs": obs,
}


def get_importance(name: str) -> Callable:
    """The measure registered as ``name``; ValueError naming the known ones otherwise."""
    if name not in IMPORTANCE_MEASURES:
        raise unknown_name_error("importance measure", name, IMPORTANCE_MEASURES)
    return IMPORTANCE_MEASURES[name]


__all__ = [
    "IMPORTANCE_MEASURES",
    "SITracker",
    "accumulate_",
    "drift",
    "fisher",
    "get_importance",
    "gradient",
    "load_importances",
    "magnitude",
    "mas",
    "obs",
    "save_importances",
    "spider",
    "spider_merge_",
    "spider_share",
    "spider_shares",
]
