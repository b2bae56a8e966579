"""``ratio="auto"``: the mask ratio read off the shape of the importance distribution.

Method (the knee of the Lorenz curve). Sort a tensor's n importances in decreasing order and
let L(x) be the share of the total importance held by the top fraction x of its entries. L is
concave, L(0) = 0 and L(1) = 1; the gain over spending the same budget uniformly, L(x) − x, is
largest where the marginal entry's importance equals the mean importance, i.e. at
x* = |{i : I_i > mean(I)}| / n. Beyond x* every extra entry carries less than its fair share,
below it every dropped entry carries more. max_x L(x) − x is the Pietra (Hoover) index of
the distribution (Pietra 1915; the Kolmogorov–Smirnov distance of the Lorenz curve from the
line of equality), and the rule has no parameter: a flat importance (no entry stands out)
gives a large ratio, a concentrated one a small ratio.

``auto_ratio`` applies it per tensor, so that scale differences between tensors (embeddings vs
attention) do not decide the budget, and returns the pooled fraction Σ_t |{I > mean(I_t)}| / N,
which ``topk_masks`` then spends at the strategy's granularity.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def auto_ratio(scores: Mapping[str, Tensor]) -> float:
    """Σ_t |{i : I_{t,i} > mean(I_t)}| / Σ_t n_t over the tensors t of ``scores``, in (0, 1].

    A tensor whose importances are all equal counts in full (no entry can be told apart, so
    none is dropped); the result is never 0 when ``scores`` is non-empty.
    """
    if not scores:
        raise ValueError("auto_ratio needs at least one importance tensor")
    above = total = 0
    for name, s in scores.items():
        flat = s.detach().float().reshape(-1)
        if bool(flat.isnan().any()):
            raise ValueError(f"importance scores of {name!r} contain NaN")
        n_above = int((flat > flat.mean()).sum())
        above += n_above if n_above else flat.numel()
        total += flat.numel()
    return above / total
