"""Model Tailor's patch of a Linear weight: choose the sparse delta to keep, reset the rest, compensate.

Zhu et al., ICML 2024, "Model Tailor: Mitigating Catastrophic Forgetting in Multi-modal Large
Language Models" (arXiv:2402.12048), as the authors' code does it (didizhu-zju/Model-Tailor,
commit e24dafe, ``llava/train/sparsegpt.py``: ``SparseGPT.fasterprune``). After a fine-tune
θ_pre → θ_ft, per Linear weight W (d_out × d_in) with layer-input Hessian H, column blocks of
``BLOCK_SIZE`` are taken left to right; in each block

- the score is 0.8·z(|W_ft − W_pre|) + 0.2·z(W² / U_jj²), U the upper Cholesky factor of H⁻¹
  (:func:`~cltune.selective.importance.obs.sparsegpt_inverse`) and z the z-score of each row
  within the block with the unbiased std (a row that is constant in the block scores NaN, as in
  the reference, and is never reset);
- the entries scoring at most the ⌊n·(1 − ratio)⌋-th smallest of the block's n scores are reset
  to W_pre; the others are the patch, kept;
- ``compensate`` decides what happens to the kept entries (:data:`COMPENSATIONS`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .importance.obs import sparsegpt_inverse

SALIENCE_WEIGHT = 0.8
SENSITIVITY_WEIGHT = 0.2
BLOCK_SIZE = 128
Compensation = Literal["reference", "exact", "none"]
COMPENSATIONS: dict[str, str] = {
    "reference": "the authors' sequential column update, as written: W[:, j:] += err·U[j, j:] with "
    "err = (w − q)/U_jj, so the score of a later block sees the weights the earlier blocks moved "
    "(SparseGPT subtracts; the added update raises the layer-output error on test tensors)",
    "exact": "the kept entries of each row absorb the reset ones by the exact multi-weight OBS "
    "update d_K = H_KK⁻¹ H_KR Δ_R, the least-squares optimum of the layer-output error dᵀHd "
    "(Hassibi & Stork 1992; Frantar & Alistarh 2022); every block is scored on W_ft",
    "none": "the kept entries stay at W_ft; every block is scored on W_ft",
}


def check_compensation(method: str, compensate: str) -> None:
    """Raise a clear error unless ``compensate`` names one of :data:`COMPENSATIONS`."""
    if compensate not in COMPENSATIONS:
        raise ValueError(f"{method}: compensate must be one of {sorted(COMPENSATIONS)}, got {compensate!r}")


def block_scores(weight: Tensor, change: Tensor, u_diag: Tensor) -> Tensor:
    """0.8·z(|Δ|) + 0.2·z(W² / U_jj²) of one column block, z per row with the unbiased std."""
    sensitivity = weight.pow(2) / u_diag[None, :].pow(2)
    return SALIENCE_WEIGHT * _row_zscore(change) + SENSITIVITY_WEIGHT * _row_zscore(sensitivity)


def _row_zscore(x: Tensor) -> Tensor:
    """(x − row mean) / row std, unbiased; NaN on a constant row (0/0), as the reference."""
    return (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)


def reset_entries(scores: Tensor, ratio: float) -> Tensor:
    """The reference's selection: reset the entries scoring ≤ the ⌊n·(1 − ratio)⌋-th smallest score.

    The sort puts NaN last and NaN compares false, so NaN-scored entries are never reset.
    """
    threshold = torch.sort(scores.flatten())[0][int(scores.numel() * (1.0 - ratio))]
    return scores <= threshold


@torch.no_grad()
def tailor_patch(
    finetuned: Tensor,
    pretrained: Tensor,
    hessian: Tensor,
    ratio: float,
    compensate: Compensation = "reference",
) -> tuple[Tensor, Tensor]:
    """Model Tailor's patched Linear weight (float32) and its kept-entry mask.

    ``finetuned``/``pretrained`` are (d_out, d_in), ``hessian`` the (d_in, d_in) damped input
    Hessian of :func:`~cltune.selective.importance.obs.layer_hessians`. ``ratio`` is the kept
    fraction (the reference's 1 − sparsity) within each block. Reset entries are W_pre exactly.
    """
    check_compensation("tailor_patch", compensate)
    w_pre = pretrained.to(finetuned.device).float()
    weight = finetuned.float().clone()
    change = (weight - w_pre).abs()
    u = sparsegpt_inverse(hessian.to(finetuned.device).float())
    u_diag = u.diagonal()
    reset = torch.zeros_like(weight, dtype=torch.bool)
    for start in range(0, weight.shape[1], BLOCK_SIZE):
        cols = slice(start, min(start + BLOCK_SIZE, weight.shape[1]))
        block = weight[:, cols].clone()
        reset[:, cols] = reset_entries(block_scores(block, change[:, cols], u_diag[cols]), ratio)
        if compensate == "reference":
            weight[:, cols.stop :] += _reference_block_update_(block, w_pre[:, cols], reset[:, cols], u, cols)
            weight[:, cols] = block
    if compensate == "reference":
        return weight, ~reset
    if compensate == "exact":
        return obs_compensate(finetuned, pretrained, ~reset, hessian), ~reset
    return torch.where(reset, w_pre, weight), ~reset


def _reference_block_update_(block: Tensor, pre: Tensor, reset: Tensor, u: Tensor, cols: slice) -> Tensor:
    """The reference's column loop over one block: sets ``block`` to its patched values in place
    and returns the update it adds to the columns right of the block (``Err1 @ Hinv[i1:i2, i2:]``)."""
    u_block = u[cols, cols]
    patched = torch.zeros_like(block)
    errors = torch.zeros_like(block)
    for i in range(block.shape[1]):
        w = block[:, i]
        q = torch.where(reset[:, i], pre[:, i], w)
        patched[:, i] = q
        errors[:, i] = (w - q) / u_block[i, i]
        block[:, i:] += errors[:, i, None] * u_block[i, None, i:]
    block.copy_(patched)
    return errors @ u[cols, cols.stop :]


@torch.no_grad()
def obs_compensate(
    finetuned: Tensor, pretrained: Tensor, keep: Tensor, hessian: Tensor, max_elements: int = 1 << 24
) -> Tensor:
    """The patched Linear weight: θ_pre outside ``keep``, w_ft + H_KK⁻¹ H_KR Δ_R inside, per row.

    With d = w − w_ft fixed to −Δ_R on the reset set R, the layer-output error dᵀ H d is
    minimised over the kept set K by d_K = H_KK⁻¹ H_KR Δ_R — the exact multi-weight OBS update
    (Hassibi & Stork, NeurIPS 1992; Frantar & Alistarh, NeurIPS 2022, "Optimal Brain
    Compression"). ``finetuned``/``pretrained``/``keep`` are (d_out, d_in), ``hessian`` the
    (d_in, d_in) damped input Hessian (positive definite). Rows are solved in batches of at most
    ``max_elements`` entries of the stacked H_KK blocks. Returns float32.
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
