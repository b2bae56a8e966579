"""TSV-Merge (Gargiulo et al., CVPR 2025, "Task Singular Vectors: Reducing Task Interference in
Model Merging"): low-rank task matrices, decorrelated before summing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cltune.merging._common import stack_deltas, weight_column


def _orthogonal_factor(matrix: Tensor) -> Tensor:
    """Polar factor ``P Qᵀ`` of ``matrix = P Σ Qᵀ``: the nearest matrix with orthonormal columns
    (rows, when wide), i.e. the orthogonal Procrustes solution."""
    left, _, right_t = torch.linalg.svd(matrix, full_matrices=False)
    return left @ right_t


def tsv_merge(
    deltas: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    *,
    fraction: float | None = None,
) -> Tensor:
    """TSV-M on one parameter; 2-D matrices only, any other shape falls back to the mean.

    For each task matrix ``w_t Δ_t = U_t Σ_t V_tᵀ`` keep its top ``k = max(1, ⌊fraction ·
    min(m, n)⌋)`` singular triplets (``fraction`` defaults to ``1/T``, the paper's choice);
    concatenate ``U = [U_1,k … U_T,k]``, ``Σ = diag(Σ_1,k … Σ_T,k)``, ``V = [V_1,k … V_T,k]``;
    decorrelate with the polar factors ``U⊥``, ``V⊥``; return ``Δ_M = U⊥ Σ V⊥ᵀ``. The paper then
    adds ``α Δ_M`` to the base (``α`` ≈ 1). Non-matrix parameters (biases, norms) get the
    paper's plain average ``Σ_t w_t Δ_t / T``. ``None`` weights mean ``w_t = 1``. Computed and
    returned in at least float32.
    """
    stacked = stack_deltas(deltas)
    count = stacked.shape[0]
    work = stacked.to(torch.promote_types(stacked.dtype, torch.float32))
    work = work * weight_column(weights, work)
    if work.dim() != 3:
        return work.sum(dim=0) / count
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    rows, cols = work.shape[1:]
    share = 1.0 / count if fraction is None else fraction
    k = max(1, int(share * min(rows, cols)))
    left, singular, right_t = torch.linalg.svd(work, full_matrices=False)
    u = left[:, :, :k].permute(1, 0, 2).reshape(rows, count * k)
    s = singular[:, :k].reshape(count * k)
    v_t = right_t[:, :k, :].reshape(count * k, cols)
    return _orthogonal_factor(u) @ torch.diag(s) @ _orthogonal_factor(v_t)
