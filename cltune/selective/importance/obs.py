"""Optimal-Brain-Surgeon sensitivity of Linear weights (Model Tailor)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ._common import Batch, Params, Scores, finish, require_params


def obs(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    damping: float = 0.01,
    dtype: torch.dtype | None = None,
) -> Scores:
    """S_ij = W_ij² / [H⁻¹]_jj², H = 2/n Σ_x x xᵀ over the n calibration inputs x of the layer.

    The sensitivity of Model Tailor (Zhu et al., ICML 2024, "Model Tailor: Mitigating
    Catastrophic Forgetting in Multi-modal Large Language Models"), the Optimal Brain Surgeon
    saliency (Hassibi & Stork, NeurIPS 1992) with the layer-wise Hessian of SparseGPT
    (Frantar & Alistarh, ICML 2023); H is built by :func:`layer_hessians`. Only 2-D weights of
    ``nn.Linear`` modules that are in ``params`` are scored.
    """
    scores: dict[str, Tensor] = {}
    for name, (module, hessian) in layer_hessians(model, params, batches, damping=damping).items():
        inv_diag = torch.cholesky_inverse(torch.linalg.cholesky(hessian)).diagonal()
        scores[name] = module.weight.detach().float().pow(2) / inv_diag.pow(2)
    return finish(scores, dtype)


def layer_hessians(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    damping: float = 0.01,
) -> dict[str, tuple[nn.Linear, Tensor]]:
    """The damped layer-wise Hessian H = 2/n Σ_x x xᵀ + λ·mean(diag H)·I of each Linear in ``params``.

    Inputs are collected with forward hooks while the model runs on ``batches``; rows at
    padding positions (``attention_mask`` == 0) are left out. Damping, as in SparseGPT
    (λ = ``damping``; λ·I if diag H is all zero), so H⁻¹ exists when some inputs are dead or
    n < d_in. Only 2-D weights of ``nn.Linear`` modules in ``params`` count (found by identity,
    so a tied ``lm_head`` appears under its name in ``params``). Memory: one float32
    d_in × d_in matrix per layer; pass a smaller ``params`` to bound it.
    """
    require_params(params)
    by_id = {id(p): name for name, p in params.items()}
    linears = {
        by_id[id(m.weight)]: m
        for m in model.modules()
        if isinstance(m, nn.Linear) and id(m.weight) in by_id and m.weight.dim() == 2
    }
    if not linears:
        raise ValueError("OBS scores nn.Linear weights only, and `params` holds none")

    collector = _GramCollector(linears)
    handles = [m.register_forward_hook(collector.hook(name)) for name, m in linears.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                mask = batch.get("attention_mask")
                collector.keep = mask.bool() if mask is not None else None
                model(**batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if max(collector.rows.values()) == 0:
        raise ValueError("no calibration inputs reached the Linear layers (no batches?)")

    hessians: dict[str, tuple[nn.Linear, Tensor]] = {}
    for name, m in linears.items():
        hessian = 2.0 * collector.gram[name] / max(collector.rows[name], 1)
        mean_diag = hessian.diagonal().mean()
        hessian.diagonal().add_(damping * mean_diag if bool(mean_diag > 0) else damping)
        hessians[name] = (m, hessian)
    return hessians


class _GramCollector:
    """Forward hooks that sum x xᵀ over the (non-padding) input rows of each Linear."""

    def __init__(self, linears: dict[str, nn.Linear]) -> None:
        self.gram = {
            name: torch.zeros(m.in_features, m.in_features, device=m.weight.device)
            for name, m in linears.items()
        }
        self.rows = dict.fromkeys(linears, 0)
        self.keep: Tensor | None = None

    def hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def collect(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].detach()
            if self.keep is not None and x.dim() == 3 and x.shape[:2] == self.keep.shape:
                x = x[self.keep.to(x.device)]
            x = x.reshape(-1, x.shape[-1]).float()
            self.gram[name].addmm_(x.T, x)
            self.rows[name] += x.shape[0]

        return collect
