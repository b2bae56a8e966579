"""Model Tailor's patch: fuse salience and sensitivity, keep a sparse delta, compensate it by OBS.

Zhu et al., ICML 2024, "Model Tailor: Mitigating Catastrophic Forgetting in Multi-modal Large
Language Models" (arXiv:2402.12048). After a fine-tune θ_pre → θ_ft with Δ = θ_ft − θ_pre:

- salience |Δ| (:func:`~cltune.selective.importance.drift`) and, for Linear weights, the
  Optimal-Brain-Surgeon sensitivity of dropping an entry of the patch, Δ_ij² / [H⁻¹]_jj²
  (the ``obs`` saliency with the delta as the weight, H from :func:`layer_hessians`), are fused
  per tensor as 0.8·z(salience) + 0.2·z(sensitivity) (z = z-score within the tensor);
- the top entries by the fused score form the patch (``topk_masks``); every other entry is
  reset to θ_pre;
- the "patch decorator": the kept entries of each row w of a Linear weight absorb the error of
  the reset ones. With d = w − w_ft fixed to −Δ_R on the reset set R, the layer-output error
  dᵀ H d is minimised over the kept set K by d_K = H_KK⁻¹ H_KR Δ_R — the exact multi-weight
  OBS update (Hassibi & Stork, NeurIPS 1992; Frantar & Alistarh, NeurIPS 2022, "Optimal Brain
  Compression"), solved here row by row in batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .importance.spider import _zscore

SALIENCE_WEIGHT = 0.8
SENSITIVITY_WEIGHT = 0.2


def tailor_scores(
    delta: Mapping[str, Tensor], inverse_hessian_diag: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """0.8·z(|Δ|) + 0.2·z(Δ² / diag(H⁻¹)²) per tensor; z(|Δ|) alone where no Hessian is given."""
    scores = {}
    for name, d in delta.items():
        salience = _zscore(d.float().abs())
        if name in inverse_hessian_diag:
            sensitivity = d.float().pow(2) / inverse_hessian_diag[name].to(d.device).pow(2)
            scores[name] = SALIENCE_WEIGHT * salience + SENSITIVITY_WEIGHT * _zscore(sensitivity)
        else:
            scores[name] = salience
    return scores


@torch.no_grad()
def obs_compensate(
    finetuned: Tensor, pretrained: Tensor, keep: Tensor, hessian: Tensor, max_elements: int = 1 << 24
) -> Tensor:
    """The patched Linear weight: θ_pre outside ``keep``, w_ft + H_KK⁻¹ H_KR Δ_R inside, per row.

    ``finetuned``/``pretrained``/``keep`` are (d_out, d_in), ``hessian`` the (d_in, d_in) damped
    input Hessian (positive definite). Rows are solved in batches of at most ``max_elements``
    entries of the stacked H_KK blocks. Returns float32.
    """
    w_ft, w_pre = finetuned.float(), pretrained.to(finetuned.device).float()
    keep = keep.to(finetuned.device)
    hessian = hessian.to(finetuned.device).float()
    out = torch.where(keep, w_ft, w_pre)
    reset_delta = torch.where(keep, torch.zeros_like(w_ft), w_ft - w_pre)  # Δ on R, 0 on K
    counts = keep.sum(1)
    k_max = int(counts.max()) if keep.numel() else 0
    if k_max == 0:
        return out
    rows_per_chunk = max(1, max_elements // (k_max * k_max))
    eye = torch.eye(k_max, device=w_ft.device)
    for start in range(0, w_ft.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        # column indices of the kept entries of each row, first, padded with column 0
        order = torch.argsort((~keep[rows]).to(torch.int8), dim=1, stable=True)[:, :k_max]
        valid = torch.arange(k_max, device=w_ft.device)[None, :] < counts[rows, None]
        idx = torch.where(valid, order, torch.zeros_like(order))
        blocks = hessian[idx[:, :, None], idx[:, None, :]]
        both = valid[:, :, None] & valid[:, None, :]
        blocks = torch.where(both, blocks, eye.expand_as(blocks))
        rhs = torch.gather(reset_delta[rows] @ hessian, 1, idx) * valid
        shift = torch.linalg.solve(blocks, rhs.unsqueeze(-1)).squeeze(-1) * valid
        out[rows].scatter_add_(1, idx, shift)
    return out
