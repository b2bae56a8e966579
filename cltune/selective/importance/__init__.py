"""Parameter-importance measures, registered by name with what each needs (:mod:`.registry`).

Every function entry has the shape ``measure(model, params, batches, **kw) -> {name: score}``:
``params`` is the trainable scope (only those names are scored), ``batches`` an iterable of
``model(**batch)`` dicts with ``labels`` (−100 outside the answer), and ``dtype`` the dtype
of the returned scores (float32 by default; ``torch.bfloat16`` halves their memory). The
``si`` entry is a class, ``SITracker``, because Synaptic Intelligence is measured during
training rather than from batches. A new measure is one module here plus its line below (or
``@register_importance`` on the function, e.g. in a user's own file).
"""

from __future__ import annotations

from .drift import drift
from .fisher import fisher
from .gradient import accumulate_, gradient
from .magnitude import magnitude
from .mas import mas
from .obs import obs
from .registry import (
    IMPORTANCE_MEASURES,
    Measure,
    get_importance,
    importance_measure,
    importance_names,
    register_importance,
)
from .si import SITracker
from .spider import spider, spider_merge_, spider_share, spider_shares
from .storage import load_importances, save_importances

register_importance("magnitude", batches=False)(magnitude)
register_importance("gradient")(gradient)
register_importance("fisher")(fisher)
register_importance("mas")(mas)
register_importance("si", batches=False, tracked=True)(SITracker)
register_importance("spider", reference=True)(spider)
register_importance("drift", batches=False, reference=True)(drift)
register_importance("obs", partial=True)(obs)

__all__ = [
    "IMPORTANCE_MEASURES",
    "Measure",
    "SITracker",
    "accumulate_",
    "drift",
    "fisher",
    "get_importance",
    "gradient",
    "importance_measure",
    "importance_names",
    "load_importances",
    "magnitude",
    "mas",
    "obs",
    "register_importance",
    "save_importances",
    "spider",
    "spider_merge_",
    "spider_share",
    "spider_shares",
]
