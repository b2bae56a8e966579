"""Synaptic Intelligence: the path integral of the loss decrease, tracked during training."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import Params, Scores, finish, require_params


class SITracker:
    """Accumulates ω_k = Σ_t −g_k(t)·Δθ_k(t) over the optimizer steps of one experience.

    Synaptic Intelligence (Zenke et al., ICML 2017, "Continual Learning Through Synaptic
    Intelligence"): each step's contribution to the loss decrease is credited to the
    parameters that moved, and the importance of the experience is
    Ω_k = ω_k / ((Δθ_k)² + ξ), Δθ_k the total change of θ_k over the experience and ξ a
    damping term. The SI penalty sums the Ω of past experiences; use one tracker per
    experience.

    Call ``before_update(params)`` at the template's ``before_update`` hook (after backward,
    gradients in ``.grad``) and ``after_update(params)`` at ``after_update``. The gradient
    read is whatever sits in ``.grad``, so a penalty added to the loss is included, as in
    Avalanche; Zenke et al. credit the unregularised loss only.
    Extra memory: four float32 copies of the tracked parameters.
    """

    def __init__(self, xi: float = 1e-3, dtype: torch.dtype | None = None) -> None:
        if xi <= 0:
            raise ValueError(f"xi must be > 0, got {xi}")
        self.xi = xi
        self.dtype = dtype
        self._params: Params = {}
        self._start: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}
        self._grads: dict[str, Tensor] = {}
        self.omega: dict[str, Tensor] = {}

    def before_update(self, params: Params) -> None:
        """Record θ and ∇θ just before the optimizer step (θ at the first call is θ_start)."""
        if not self._params:
            require_params(params)
            self._params = params
            self._start = {n: p.detach().float().clone() for n, p in params.items()}
            self.omega = {n: torch.zeros_like(s) for n, s in self._start.items()}
        self._before = {n: p.detach().float().clone() for n, p in params.items()}
        self._grads = {n: p.grad.detach().float().clone() for n, p in params.items() if p.grad is not None}

    def after_update(self, params: Params) -> None:
        """Add −g·Δθ of the step just taken to ω."""
        for name, g in self._grads.items():
            step = params[name].detach().float() - self._before[name]
            self.omega[name].addcmul_(g, step, value=-1.0)
        self._grads = {}

    def importance(self) -> Scores:
        """Ω = ω / ((θ_now − θ_start)² + ξ) for every tracked parameter."""
        if not self._params:
            raise ValueError("SITracker.importance() before any before_update(): nothing tracked")
        return finish(
            {
                name: self.omega[name] / ((p.detach().float() - self._start[name]).pow(2) + self.xi)
                for name, p in self._params.items()
            },
            self.dtype,
        )
