"""O-LoRA's orthogonality loss (Wang et al., EMNLP 2023 Findings, "Orthogonal Subspace Learning for
Language Model Continual Learning")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor


def orthogonality_loss(
    new: Mapping[str, Tensor], old: Sequence[Mapping[str, Tensor]], squared: bool = False
) -> Tensor:
    """``Σ_{i<t} Σ_modules Σ_{j,k} |(A_i A_tᵀ)_{jk}|``: the authors' code, or the paper's ``‖·‖_F²``.

    The default is O-LoRA's ``src/uie_trainer_lora.py``, ``torch.abs(torch.mm(lora_A, loranew_A.T)).sum()``
    with the earlier adapters' ``lora_A`` concatenated (so the sum over old tasks); ``squared=True`` is
    the paper's ``L_orth = Σ_{j,k} O_{i,t}[j,k]²``. The paper writes ``A`` as ``(in, r)``, whose columns
    span the task's subspace; PEFT stores ``lora_A`` as ``(r, in)``, its transpose, so the
    ``(r_i, r_t)`` overlap is ``A_i A_tᵀ`` here. ``new`` and each of ``old`` map module names to
    ``lora_A`` weights; a module that an old adapter does not have adds nothing. Zero exactly when
    every new row is orthogonal to every old row.
    """
    if not new:
        raise ValueError("the new adapter has no LoRA A matrices")
    total = next(iter(new.values())).new_zeros(())
    for previous in old:
        for module, a_new in new.items():
            if module in previous:
                overlap = previous[module].detach() @ a_new.T
                total = total + (overlap.pow(2) if squared else overlap.abs()).sum()
    return total
