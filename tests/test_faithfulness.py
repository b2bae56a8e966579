"""cltune's Model Tailor and SPIDER against small re-statements of the authors' code, on fixed tensors.

The ``ref_*`` functions below follow the reference code line by line, in plain torch:
- SPIDER: WenkeHuang/SPIDER @ 197c934, ``Code/train/SPIDER.py`` (``calculate_rank`` and the
  ``challenge_rank`` block after ``optimizer.step()``);
- Model Tailor: didizhu-zju/Model-Tailor @ e24dafe, ``llava/train/sparsegpt.py``
  (``SparseGPT.add_batch`` and ``fasterprune`` with ``prunen = 0``, ``use_tops = False``, as
  ``main_model_tailor.py`` calls it: sparsity 0.9, blocksize 128, percdamp 0.01).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cltune.selective import spider_share
from cltune.selective.importance import obs
from cltune.selective.importance.obs import layer_hessians, sparsegpt_inverse
from cltune.selective.tailor import tailor_patch
from cltune.strategies.registry import build_preset

# --- SPIDER ------------------------------------------------------------------------------------


def ref_calculate_rank(hp_items):
    if torch.all(hp_items == 0):
        return torch.zeros_like(hp_items)
    hp_items = torch.abs(hp_items)
    rank_hp_items = (hp_items - torch.mean(hp_items)) / torch.std(hp_items)
    rank_hp_items = torch.sigmoid(rank_hp_items)
    return rank_hp_items


def ref_challenge_rank(before_param, momentum_current_grad):
    original_rank = ref_calculate_rank(before_param)
    new_grad_rank = ref_calculate_rank(momentum_current_grad)
    challenge_rank = torch.where(
        original_rank < new_grad_rank,
        new_grad_rank / (original_rank + new_grad_rank),
        torch.tensor(0.0),
    )
    non_zero_elements = challenge_rank[challenge_rank != 0]
    if non_zero_elements.numel() > 0:
        mean_value = non_zero_elements.mean()
        challenge_rank /= mean_value
        challenge_rank = torch.where(challenge_rank > 1.0, torch.tensor(1.0), challenge_rank)
    return challenge_rank


def _spider_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    theta, grad = torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    return {
        "random 20": (torch.randn(20, generator=g), torch.randn(20, generator=g)),
        "random 8x8": (theta, grad),
        "zero theta_pre (LoRA B at init)": (torch.zeros(8, 8), grad),
        "zero grad sum": (theta, torch.zeros(8, 8)),
        "both zero": (torch.zeros(8, 8), torch.zeros(8, 8)),
        "constant theta_pre (norm at init)": (torch.ones(8, 8), grad),
        "constant grad sum": (theta, torch.full((8, 8), -0.5)),
        "one outlier": (torch.tensor([0.0, 0.0, 0.0, 3.0]), torch.tensor([1.0, 1.0, 1.0, 1.5])),
    }


@pytest.mark.parametrize("case", list(_spider_cases()))
def test_spider_share_is_the_reference_challenge_rank(case):
    theta_pre, grad_sum = _spider_cases()[case]
    assert torch.equal(spider_share(theta_pre, grad_sum), ref_challenge_rank(theta_pre, grad_sum))


def test_spider_edge_cases_move_what_the_reference_moves():
    theta, grad = _spider_cases()["random 8x8"]
    assert torch.equal(spider_share(torch.zeros(8, 8), grad), torch.ones(8, 8))  # all 64 move, fully
    assert not bool(spider_share(theta, torch.zeros(8, 8)).any())  # ΣG = 0: none of the 64 moves
    assert not bool(spider_share(torch.ones(8, 8), grad).any())  # constant θ_pre: 0/0, none moves


def test_spider_uses_the_unbiased_std():
    theta, grad = _spider_cases()["random 20"]

    def population_rank(x):
        a = x.abs()
        return torch.sigmoid((a - a.mean()) / a.std(correction=0))

    i_pre, i_ft = population_rank(theta), population_rank(grad)
    share = torch.where(i_pre < i_ft, i_ft / (i_pre + i_ft), torch.zeros(20))
    share = (share / share[share != 0].mean()).clamp(max=1.0)
    assert float((spider_share(theta, grad) - share).abs().max()) > 1e-4  # the choice shows at 20 entries


# --- Model Tailor --------------------------------------------------------------------------------


def ref_add_batch(H, nsamples, inp):
    if len(inp.shape) == 2:
        inp = inp.unsqueeze(0)
    tmp = inp.shape[0]
    if len(inp.shape) == 3:
        inp = inp.reshape((-1, inp.shape[-1]))
    inp = inp.t()
    H *= nsamples / (nsamples + tmp)
    nsamples += tmp
    inp = math.sqrt(2 / nsamples) * inp.float()
    H += inp.matmul(inp.t())
    return H, nsamples


def ref_damped(H, percdamp=0.01):
    H = H.clone()
    columns = H.shape[0]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    return H


def ref_fasterprune(W, pretrain_weights, H, sparsity, blocksize=128, percdamp=0.01):
    """``fasterprune`` from the reference, returning the new weight and the reset mask."""
    W = W.clone().float()
    rows, columns = W.shape
    H = ref_damped(H, percdamp)
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    param_changes = torch.abs(W - pretrain_weights)
    hybrid_mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        param_changes_mean = param_changes[:, i1:i2].mean(dim=1, keepdim=True)
        param_changes_std = param_changes[:, i1:i2].std(dim=1, keepdim=True)
        tmp_mean = tmp.mean(dim=1, keepdim=True)
        tmp_std = tmp.std(dim=1, keepdim=True)
        param_changes_normalized = (param_changes[:, i1:i2] - param_changes_mean) / param_changes_std
        tmp_normalized = (tmp - tmp_mean) / tmp_std
        importance_score = 0.8 * param_changes_normalized + 0.2 * tmp_normalized
        thresh = torch.sort(importance_score.flatten())[0][int(importance_score.numel() * sparsity)]
        mask1 = importance_score <= thresh
        hybrid_mask[:, i1:i2] = mask1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = w.clone()
            mask_indices = mask1[:, i]
            q[mask_indices] = pretrain_weights[:, i1 + i][mask_indices].to(q.dtype)
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] += err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] += Err1.matmul(Hinv[i1:i2, i2:])
    return W, hybrid_mask


def _layer(d_out: int = 8, d_in: int = 300, seed: int = 0):
    """A fine-tuned Linear weight over 3 column blocks (the last one partial) and its raw H."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(6, 20, d_in, generator=g) @ torch.randn(d_in, d_in, generator=g) / d_in**0.5
    inputs[..., 7] = 0.0  # a dead input: H_77 = 0
    H, n = torch.zeros(d_in, d_in), 0
    for sequence in inputs:  # one sequence per add_batch call: n counts sequences
        H, n = ref_add_batch(H, n, sequence)
    pre = torch.randn(d_out, d_in, generator=g)
    ft = pre + 0.1 * torch.randn(d_out, d_in, generator=g)
    return inputs, H, pre, ft


class OneLinear(nn.Module):
    """A model that is one bias-free Linear layer over input features."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.lin(inputs)


def test_layer_hessians_build_the_reference_hessian():
    inputs, H, _, _ = _layer()
    model = OneLinear(torch.zeros(4, inputs.shape[-1]))
    hessians = layer_hessians(model, {"lin.weight": model.lin.weight}, [{"inputs": inputs}])
    torch.testing.assert_close(hessians["lin.weight"][1], ref_damped(H), rtol=1e-4, atol=1e-5)


def test_obs_is_sparsegpts_score_with_a_first_power_diagonal():
    # the example: H = diag(4, 2), W = [1, 1.5] → reference [4, 4.5], not [16, 9]
    model = OneLinear(torch.tensor([[1.0, 1.5]]))
    x = torch.tensor([[[2.0, 0.0]], [[0.0, math.sqrt(2.0)]]])  # 2 sequences: H = 2/2·Σ x xᵀ = diag(4, 2)
    scores = obs(model, {"lin.weight": model.lin.weight}, [{"inputs": x}], damping=0.0)["lin.weight"]
    torch.testing.assert_close(scores, torch.tensor([[4.0, 4.5]]))
    assert scores[0, 1] > scores[0, 0]  # the ranking the squared diagonal flipped


def test_sparsegpt_inverse_is_the_reference_factor():
    _, H, _, _ = _layer()
    damped = ref_damped(H)
    expected = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    assert torch.equal(sparsegpt_inverse(damped), expected)


def _tailor_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    _, _, pre, ft = _layer()
    some_rows_unchanged = ft.clone()
    some_rows_unchanged[2] = pre[2]  # Δ = 0 in a row: NaN z-scores, never reset
    constant_delta = pre + 0.25
    return {
        "random": (pre, ft),
        "a row without change": (pre, some_rows_unchanged),
        "zero delta": (pre, pre.clone()),
        "constant delta": (pre, constant_delta),
    }


@pytest.mark.parametrize("case", list(_tailor_cases()))
def test_tailor_patch_is_the_reference_fasterprune(case):
    pre, ft = _tailor_cases()[case]
    _, H, _, _ = _layer()
    expected, reset = ref_fasterprune(ft, pre, H, sparsity=0.9)
    patched, keep = tailor_patch(ft, pre, ref_damped(H), ratio=0.1)
    assert torch.equal(keep, ~reset)
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(patched[~keep], pre[~keep])  # reset entries: θ_pre exactly


def test_tailor_keeps_the_reference_count_per_block():
    pre, ft = _tailor_cases()["random"]
    _, H, _, _ = _layer()
    _, keep = tailor_patch(ft, pre, ref_damped(H), ratio=0.1)
    for start, width in ((0, 128), (128, 128), (256, 44)):
        n = 8 * width
        assert int(keep[:, start : start + width].sum()) == n - int(n * 0.9) - 1


def ref_masks_on_finetuned(W, pretrain_weights, H, sparsity, blocksize=128):
    """The reference's selection with every block scored on W_ft (no compensation in between)."""
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(ref_damped(H))), upper=True)
    param_changes = torch.abs(W - pretrain_weights)
    masks = []
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        tmp = W[:, i1:i2] ** 2 / torch.diag(Hinv[i1:i2, i1:i2]).reshape((1, -1)) ** 2
        p = param_changes[:, i1:i2]
        score = 0.8 * (p - p.mean(1, keepdim=True)) / p.std(1, keepdim=True) + 0.2 * (
            tmp - tmp.mean(1, keepdim=True)
        ) / tmp.std(1, keepdim=True)
        masks.append(score <= torch.sort(score.flatten())[0][int(score.numel() * sparsity)])
    return torch.cat(masks, dim=1)


def test_the_other_compensations_select_on_w_ft_and_order_the_output_error():
    _, H, pre, ft = _layer()
    reset = ref_masks_on_finetuned(ft, pre, H, sparsity=0.9)
    damped = ref_damped(H)
    outputs = {}
    for compensate in ("reference", "exact", "none"):
        patched, keep = tailor_patch(ft, pre, damped, ratio=0.1, compensate=compensate)
        if compensate != "reference":
            assert torch.equal(keep, ~reset), compensate
        assert torch.equal(patched[~keep], pre[~keep]), compensate
        d = (patched - ft).double()
        outputs[compensate] = float(torch.einsum("ij,jk,ik->", d, H.double(), d))  # dᵀHd per row, summed
    # the exact OBS update lowers the layer-output error; the reference's added update raises it
    assert outputs["exact"] < outputs["none"] < outputs["reference"]


def test_an_unknown_compensation_is_refused():
    words = r"model-tailor: compensate must be one of \['exact', 'none', 'reference'\], got 'obs'"
    with pytest.raises(ValueError, match=words):
        build_preset("model-tailor", compensate="obs")
