"""``ratio="auto"``: the mask ratio read off the importance distribution, as its effective support.

Method (Kish's effective sample size). Treat the importances I_1..I_N of all trainable entries
as weights; the number of entries that effectively carry them is
N_eff = (Σ I)² / Σ I² (Kish 1965, "Survey Sampling"; the participation ratio / inverse Simpson
index of the normalised importance), and the ratio is N_eff / N = mean(I)² / mean(I²)
= 1 / (1 + CV²), CV the coefficient of variation of I. If the importance is spread evenly over
k entries and zero elsewhere, the ratio is exactly k/N; a flat importance gives 1 (nothing
stands out, nothing is held back); a concentrated one a small ratio. It is computed over the
whole scope at once, so the tensors where the task's gradient concentrates decide how small
the budget is; ``topk_masks`` then spends it at the strategy's granularity. Data-driven and
parameter-free; it uses only the importance the strategy already computed.

Chosen after a first rule, the knee of each tensor's Lorenz curve (the fraction above the
tensor's mean), gave ≈ 25% on every task of the default stream and missed the best fixed ratio
by 20 points of H; see ``reports/SELECTIVE_BENCHMARK.md`` for the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def auto_ratio(scores: Mapping[str, Tensor]) -> float:
    """(Σ I)² / (N · Σ I²) over every entry of ``scores`` (non-negative importances), in (0, 1].

    All-zero importances carry no preference and give 1.0.
    """
    if not scores:
        raise ValueError("auto_ratio needs at least one importance tensor")
    total = square = 0.0
    count = 0
    for name, s in scores.items():
        flat = s.detach().double().reshape(-1)
        if bool(flat.isnan().any()):
            raise ValueError(f"importance scores of {name!r} contain NaN")
        if bool((flat < 0).any()):
            raise ValueError(f"importance scores of {name!r} are negative; auto_ratio needs I >= 0")
        total += float(flat.sum())
        square += float(flat.pow(2).sum())
        count += flat.numel()
    if count == 0:
        raise ValueError("auto_ratio got importance tensors with no entries")
    return 1.0 if square == 0.0 else total * total / (count * square)
