"""SparseGPT's layer-wise Hessian and saliency of Linear weights (Model Tailor's sensitivity)."""

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
    """S_ij = W_ij² / U_jj², U the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), H from :func:`layer_hessians`.

    The pruning score of SparseGPT (Frantar & Alistarh, ICML 2023, ``sparsegpt.py``:
    ``W1 ** 2 / diag(Hinv1) ** 2``), which Model Tailor (Zhu et al., ICML 2024) uses as its
    sensitivity (``llava/train/sparsegpt.py`` of didizhu-zju/Model-Tailor). Since
    U_jj² = [(H_{j:,j:})⁻¹]_jj, S is twice the Optimal-Brain-Surgeon loss of zeroing W_ij
    (Hassibi & Stork, NeurIPS 1992) once the columns before j are fixed, SparseGPT's column
    order; for a diagonal H it is W_ij² / [H⁻¹]_jj. Only 2-D weights of ``nn.Linear`` modules
    that are in ``params`` are scored.
    """
    scores: dict[str, Tensor] = {}
    for name, (module, hessian) in layer_hessians(model, params, batches, damping=damping).items():
        u_diag = sparsegpt_inverse(hessian).diagonal()
        scores[name] = module.weight.detach().float().pow(2) / u_diag.pow(2)
    return finish(scores, dtype)


def sparsegpt_inverse(hessian: Tensor) -> Tensor:
    """U, the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), computed as SparseGPT does."""
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    return torch.linalg.cholesky(inverse, upper=True)


def layer_hessians(
    model: nn.Module,
    params: Params,
    batches: Iterable[Batch],
    *,
    damping: float = 0.01,
) -> dict[str, tuple[nn.Linear, Tensor]]:
    """The damped layer-wise Hessian of each Linear in ``params``, as SparseGPT builds it.

    H = 2/n Σ_x x xᵀ, x the layer's input rows and n the number of calibration sequences
    (SparseGPT's ``add_batch`` counts ``inp.shape[0]``; a 2-D input counts its rows); then, as
    in SparseGPT's ``fasterprune``, a dead input (H_jj = 0) gets H_jj = 1 and the diagonal gets
    λ·mean(diag H) (λ = ``damping``), so H⁻¹ exists when some inputs are dead or n < d_in.
    Inputs are collected with forward hooks while the model runs on ``batches``; rows at
    padding positions (``attention_mask`` == 0) are left out (the reference keeps them). Only
    2-D weights of ``nn.Linear`` modules in ``params`` count (found by identity, so a tied
    ``lm_head`` appears under its name in ``params``). Memory: one float32 d_in × d_in matrix
    per layer; pass a smaller ``params`` to bound it.
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
        hessian = 2.0 * collector.gram[name] / max(collector.samples[name], 1)
        diagonal = hessian.diagonal()
        diagonal.masked_fill_(diagonal == 0, 1.0)
        diagonal.add_(damping * diagonal.mean())
        hessians[name] = (m, hessian)
    return hessians


class _GramCollector:
    """Forward hooks that sum x xᵀ over the (non-padding) input rows of each Linear, and count its inputs."""

    def __init__(self, linears: dict[str, nn.Linear]) -> None:
        self.gram = {
            name: torch.zeros(m.in_features, m.in_features, device=m.weight.device)
            for name, m in linears.items()
        }
        self.rows = dict.fromkeys(linears, 0)
        self.samples = dict.fromkeys(linears, 0)
        self.keep: Tensor | None = None

    def hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def collect(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].detach()
            self.samples[name] += x.shape[0]
            if self.keep is not None and x.dim() == 3 and x.shape[:2] == self.keep.shape:
                x = x[self.keep.to(x.device)]
            x = x.reshape(-1, x.shape[-1]).float()
            self.gram[name].addmm_(x.T, x)
            self.rows[name] += x.shape[0]

        return collect
