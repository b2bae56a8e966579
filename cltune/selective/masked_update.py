"""Exact masked updates: entries outside the mask stay bit-identical through training.

Design. A plain optimizer moves an entry whose gradient is zero in two ways: through its
state (Adam's m and v, SGD's momentum) when that state is non-zero, and through weight
decay, which touches every entry. ``MaskedUpdate`` removes both:

1. ``after_backward``: gradients outside the mask are set to exactly 0 (``masked_fill``,
   so a NaN/inf there cannot leak). With a zero gradient and zero state, Adam/AdamW's step
   is −lr·0/(0+ε) = −0, and θ + (−0) = θ bit for bit; SGD's is −lr·0. The state outside the
   mask therefore stays 0 for as long as the mask holds.
2. On construction the optimizer's state outside the mask is zeroed (a fresh optimizer has
   none), so the same optimizer may be kept when the mask changes between experiences.
3. Weight decay is taken over: the ``weight_decay`` of every optimizer group that holds a
   parameter under control is remembered and set to 0 in the optimizer, and
   ``before_update`` applies it to the masked-in entries only, in the optimizer's own
   convention: decoupled θ ← θ·(1 − lr·λ) for AdamW (Loshchilov & Hutter, ICLR 2019), which
   is the same scalar multiply AdamW runs at the start of its step, or coupled
   g ← g + λ·θ (L2) for Adam/SGD. Entries outside the mask are selected unchanged by
   ``torch.where``. ``close`` gives the optimizer its weight decay back.

Exact for optimizers whose step is zero for an entry with zero gradient and zero state
(SGD, Adam, AdamW, Adagrad, RMSprop) and ε > 0; tested with AdamW. A parameter without a
mask (in ``params`` or merely in a group the class took the weight decay of) is updated and
decayed in full, as the optimizer would have done.
Extra memory: the bool masks, 1 byte per masked parameter (``packing`` stores them at 1 bit
on disk), plus one tensor-sized temporary at a time in ``before_update``; no weight copies.
Call ``before_update`` last before ``optimizer.step()`` (after clipping; with a
``GradScaler`` and coupled decay, after ``scaler.unscale_``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


@torch.no_grad()
def mask_gradients_(params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
    """Set ``.grad`` to exactly 0 outside each mask (call after every backward)."""
    for name, mask in masks.items():
        grad = params[name].grad
        if grad is not None:
            grad.masked_fill_(~mask, 0.0)


@torch.no_grad()
def zero_state_outside_(
    optimizer: Optimizer, params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]
) -> None:
    """Zero every per-entry optimizer state tensor (m, v, momentum ...) outside the masks."""
    for name, mask in masks.items():
        for value in optimizer.state.get(params[name], {}).values():
            if isinstance(value, Tensor) and value.shape == mask.shape:
                value.masked_fill_(~mask, 0)


class MaskedUpdate:
    """Confine an optimizer's updates to ``masks`` exactly; see the module docstring.

    Call ``after_backward()`` at the template's ``after_backward`` hook (after each backward,
    before any gradient clipping) and ``before_update()`` at ``before_update`` (right before
    ``optimizer.step()``); ``close()`` at the end of the experience.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        params: Mapping[str, nn.Parameter],
        masks: Mapping[str, Tensor],
    ) -> None:
        unknown = [name for name in masks if name not in params]
        if unknown:
            raise ValueError(f"masks for parameters outside `params`, e.g. {unknown[0]!r}")
        self.params = dict(params)
        self.masks: dict[str, Tensor] = {}
        for name, mask in masks.items():
            p = params[name]
            if mask.shape != p.shape:
                raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != {tuple(p.shape)}")
            self.masks[name] = mask.to(device=p.device, dtype=torch.bool)
        self._mask_of = {id(self.params[name]): mask for name, mask in self.masks.items()}
        controlled = {id(p) for p in self.params.values()}
        self._groups: list[tuple[dict, float]] = []
        for group in optimizer.param_groups:
            if any(id(p) in controlled for p in group["params"]):
                self._groups.append((group, float(group.get("weight_decay", 0.0))))
                if "weight_decay" in group:
                    group["weight_decay"] = 0.0
        zero_state_outside_(optimizer, self.params, self.masks)

    def after_backward(self) -> None:
        """Zero the gradients outside the masks."""
        mask_gradients_(self.params, self.masks)

    @torch.no_grad()
    def before_update(self) -> None:
        """Apply each group's weight decay to the masked-in entries only."""
        for group, decay in self._groups:
            if group.get("weight_decay", 0.0) != 0.0:
                raise ValueError("the optimizer's weight_decay was set again; it must stay 0")
            if decay == 0.0:
                continue
            lr = float(group["lr"])
            decoupled = bool(group.get("decoupled_weight_decay", False))
            sign = -1.0 if group.get("maximize", False) else 1.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                mask = self._mask_of.get(id(p))
                if decoupled:
                    decayed = p * (1.0 - lr * decay)
                    p.copy_(decayed if mask is None else torch.where(mask, decayed, p))
                else:
                    decayed = p.grad.add(p, alpha=sign * decay)
                    p.grad.copy_(decayed if mask is None else torch.where(mask, decayed, p.grad))

    def close(self) -> None:
        """Give the optimizer back its weight decay."""
        for group, decay in self._groups:
            if "weight_decay" in group:
                group["weight_decay"] = decay
