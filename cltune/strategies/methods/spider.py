"""SPIDER: after every step, move each entry from θ_pre towards its new value by its update share.

Huang et al., ICML 2025, "Learn from Downstream and Be Yourself in Multimodal Large Language
Models Fine-Tuning" (arXiv:2411.10928). Per tensor, I_pre = σ(z(|θ_pre|)) and I_ft = σ(z(|ΣG|)),
ΣG the gradient summed over the experience so far; c = I_ft / (I_pre + I_ft) where I_ft > I_pre,
else 0, divided by the mean of its non-zero entries and capped at 1
(:func:`cltune.selective.spider_share`); after each optimizer step θ ← θ_pre·(1 − c) + θ·c
(:func:`cltune.selective.spider_merge_`). No mask ratio: c decides per entry.

ΣG adds each update's gradient once, as the optimizer steps it: at the template's
``before_update``, summed over the update's micro-batches, clipped (the authors' ``SPIDER.py``
reads it after ``optimizer.step()``, so after ``clip_grad_norm_``), under fp16 unscaled. An fp16
update skipped for overflow adds nothing (deliberate: the reference would add its inf gradient).

θ_pre is the model at the start of each experience (in a stream, the pre-trained model of that
step), so an entry with c = 0 is held at its value before the experience. Extra memory per
trainable parameter: θ_pre in the parameter's dtype and ΣG in float32 (8 bytes for fp32
weights, against 12 for the reference design's three fp32 copies), plus one tensor-sized
temporary at a time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cltune.selective import spider_merge_, spider_share
from cltune.selective.importance import accumulate_
from cltune.strategies.calibration import scope_params, snapshot
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import Preset, register


class SpiderPlugin(Plugin):
    full_parameters = "it reads whole gradients and blends parameters by name at every step"

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, float]] = {}
        self._params: dict[str, nn.Parameter] = {}
        self._pre: dict[str, Tensor] = {}
        self._grad_sum: dict[str, Tensor] = {}

    def before_training_exp(self, strategy) -> None:
        self._params = scope_params(strategy, "spider")
        self._pre = snapshot(self._params)
        self._grad_sum = {}

    def before_update(self, strategy) -> None:
        accumulate_(self._grad_sum, {name: p.grad for name, p in self._params.items()})

    def after_update(self, strategy) -> None:
        for name, g in self._grad_sum.items():  # one share tensor alive at a time
            spider_merge_(self._params, self._pre, {name: spider_share(self._pre[name], g)})

    @torch.no_grad()
    def after_training_exp(self, strategy) -> None:
        moving = total = 0
        share_sum = 0.0
        for name, g in self._grad_sum.items():
            share = spider_share(self._pre[name], g)
            moving += int((share > 0).sum())
            share_sum += float(share.sum())
            total += share.numel()
        self.stats[strategy.experience.name] = {
            "updated_fraction": moving / max(total, 1),
            "mean_share": share_sum / max(total, 1),
        }
        strategy.extra_results["spider"] = dict(self.stats)
        self._params, self._pre, self._grad_sum = {}, {}, {}

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = dict(state["stats"])


@register("spider")
def spider() -> Preset:
    """SPIDER: each step, blend every weight back towards θ_pre by its importance-discrepancy share."""
    return Preset(plugins=[SpiderPlugin()])
