"""Importance measures checked against gradients and formulas worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutput

from cltune.selective.importance import (
    IMPORTANCE_MEASURES,
    SITracker,
    drift,
    fisher,
    get_importance,
    gradient,
    load_importances,
    magnitude,
    mas,
    obs,
    save_importances,
    spider,
    spider_merge_,
    spider_share,
)

W = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
X1, Y1 = torch.tensor([1.0, -1.0]), 1
X2, Y2 = torch.tensor([0.5, 2.0]), 0


class TinyLM(nn.Module):
    """A real (if minimal) causal 'LM' over feature vectors: logits_t = W x_t.

    Like an HF causal LM, position t predicts label t+1 and the loss skips labels == −100.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight)

    def forward(self, inputs, labels=None, attention_mask=None) -> CausalLMOutput:
        logits = self.lin(inputs)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)


def one_answer_batch(x: torch.Tensor, y: int) -> dict[str, torch.Tensor]:
    """Position 0 carries x and predicts the answer y; position 1 is junk that must not count."""
    junk = torch.tensor([50.0, -70.0])
    return {"inputs": torch.stack([x, junk])[None], "labels": torch.tensor([[-100, y]])}


def ce_grad(w: torch.Tensor, x: torch.Tensor, y: int) -> torch.Tensor:
    """∂CE(softmax(Wx), y)/∂W = (softmax(Wx) − e_y) xᵀ."""
    p = torch.softmax(w @ x, dim=0)
    p[y] -= 1.0
    return torch.outer(p, x)


@pytest.fixture
def tiny() -> tuple[TinyLM, dict[str, nn.Parameter], list[dict[str, torch.Tensor]]]:
    model = TinyLM(W)
    return (
        model,
        dict(model.named_parameters()),
        [one_answer_batch(X1, Y1), one_answer_batch(X2, Y2)],
    )


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config)


def llama_batches(n: int = 2) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 64, (2, 8), generator=g)
        labels = ids.clone()
        labels[:, :5] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def test_magnitude_is_abs_weight_and_keeps_bf16(tiny):
    _, params, _ = tiny
    scores = magnitude(None, params, dtype=torch.bfloat16)
    assert scores["lin.weight"].dtype == torch.bfloat16
    assert torch.equal(scores["lin.weight"].float(), W.abs())


def test_gradient_is_abs_of_summed_hand_gradient(tiny):
    model, params, batches = tiny
    expected = (ce_grad(W, X1, Y1) + ce_grad(W, X2, Y2)).abs()
    scores = gradient(model, params, batches)
    torch.testing.assert_close(scores["lin.weight"], expected)
    assert model.lin.weight.grad is None  # measures do not touch .grad


def test_fisher_is_mean_squared_batch_gradient(tiny):
    model, params, batches = tiny
    expected = (ce_grad(W, X1, Y1) ** 2 + ce_grad(W, X2, Y2) ** 2) / 2
    torch.testing.assert_close(fisher(model, params, batches)["lin.weight"], expected)


def test_mas_matches_hand_derived_output_norm_gradient(tiny):
    model, params, batches = tiny
    # ‖Wx‖² = xᵀWᵀWx, so ∂/∂W = 2 (Wx) xᵀ; only position 0 is an answer position.
    expected = (2 * torch.outer(W @ X1, X1)).abs() / 2 + (2 * torch.outer(W @ X2, X2)).abs() / 2
    torch.testing.assert_close(mas(model, params, batches)["lin.weight"], expected)


def test_si_on_a_one_parameter_quadratic():
    # L = ½·a·θ², SGD with lr η: θ 1 → 0.8 → 0.64 → 0.512, gradients a·θ = 2, 1.6, 1.28.
    theta = nn.Parameter(torch.tensor([1.0]))
    params = {"theta": theta}
    opt = torch.optim.SGD([theta], lr=0.1)
    tracker = SITracker(xi=0.1)
    for _ in range(3):
        opt.zero_grad()
        (0.5 * 2.0 * theta**2).sum().backward()
        tracker.before_update(params)
        opt.step()
        tracker.after_update(params)
    omega = 2 * 0.2 + 1.6 * 0.16 + 1.28 * 0.128  # Σ −g·Δθ = 0.81984
    torch.testing.assert_close(tracker.omega["theta"], torch.tensor([omega]))
    expected = omega / ((0.512 - 1.0) ** 2 + 0.1)  # ω / (Δθ² + ξ) = 2.42453...
    torch.testing.assert_close(tracker.importance()["theta"], torch.tensor([expected]))


def test_spider_share_worked_example():
    # |θ_pre| = 1,2,3,4 → z = −1.162, −0.387, 0.387, 1.162 (unbiased std 1.291); |ΣG| = 4,3,2,1 →
    # the reverse. Where I_ft > I_pre (first two): c = σ(1.162) = 0.76168, σ(0.387) = 0.59563;
    # divided by their mean 0.67866 → 1.1223 (capped to 1) and 0.87767.
    share = spider_share(torch.tensor([1.0, -2.0, 3.0, -4.0]), torch.tensor([4.0, -3.0, 2.0, 1.0]))
    torch.testing.assert_close(share, torch.tensor([1.0, 0.8776662, 0.0, 0.0]))
    # A constant θ_pre has no ranking (0/0 in the reference's z-score): none of it moves.
    flat = spider_share(torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(flat, torch.zeros(3))


def test_spider_merge_rule_is_exact_at_the_ends():
    p = nn.Parameter(torch.tensor([3.0, 4.0, 7.0]))
    pre = {"p": torch.tensor([1.0, 2.0, 5.0])}
    spider_merge_({"p": p}, pre, {"p": torch.tensor([0.25, 1.0, 0.0])})
    assert torch.equal(p.data, torch.tensor([1.5, 4.0, 5.0]))  # 1·0.75 + 3·0.25, θ, θ_pre


def test_spider_measure_uses_the_accumulated_gradient(tiny):
    model, params, batches = tiny
    expected = spider_share(W, ce_grad(W, X1, Y1) + ce_grad(W, X2, Y2))
    torch.testing.assert_close(spider(model, params, batches)["lin.weight"], expected)


def test_drift_is_abs_difference(tiny):
    _, params, _ = tiny
    pre = {"lin.weight": torch.tensor([[0.0, 2.5], [-1.0, 1.0]])}
    scores = drift(None, params, pretrained=pre)
    assert torch.equal(scores["lin.weight"], torch.tensor([[1.0, 0.5], [0.0, 0.5]]))
    with pytest.raises(ValueError, match="lacks"):
        drift(None, params, pretrained={})


def test_obs_matches_numpy_and_skips_padding():
    torch.manual_seed(3)
    weight = torch.randn(2, 3)
    model = TinyLM(weight)
    inputs = torch.randn(2, 4, 3)
    inputs[1, 3] = 1e3  # a padding position: must not enter H
    mask = torch.ones(2, 4, dtype=torch.long)
    mask[1, 3] = 0
    batches = [
        {"inputs": inputs[:1], "attention_mask": mask[:1]},
        {"inputs": inputs[1:], "attention_mask": mask[1:]},
    ]
    scores = obs(model, dict(model.named_parameters()), batches)

    x = inputs.reshape(-1, 3).numpy()[mask.reshape(-1).numpy() == 1].astype(np.float64)
    h = 2.0 / 2 * x.T @ x  # n = 2 calibration sequences, as SparseGPT counts
    h += 0.01 * np.mean(np.diag(h)) * np.eye(3)
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H⁻¹ = UᵀU
    expected = weight.numpy() ** 2 / np.diag(upper)[None, :] ** 2
    np.testing.assert_allclose(scores["lin.weight"].numpy(), expected, rtol=1e-4)


def test_obs_scores_only_linear_weights_in_scope():
    model = tiny_llama()
    named = dict(model.named_parameters())
    scope = {n: p for n, p in named.items() if n.startswith("model.layers.1.")}
    scores = obs(model, scope, llama_batches(1))
    assert set(scores) == {n for n in scope if n.endswith("proj.weight")}
    with pytest.raises(ValueError, match="nn.Linear"):
        obs(model, {"model.norm.weight": named["model.norm.weight"]}, llama_batches(1))


def test_measures_on_a_real_llama_score_only_the_scope():
    model = tiny_llama()
    named = dict(model.named_parameters())
    scope = {n: p for n, p in named.items() if n.startswith("model.layers.0.mlp.")}
    batches = llama_batches()
    for batch in batches:
        model(**batch).loss.backward()
    summed = {n: p.grad.clone() for n, p in scope.items()}
    model.zero_grad(set_to_none=True)

    scope["model.layers.0.mlp.up_proj.weight"].requires_grad_(False)
    for name in ("gradient", "fisher", "mas", "spider"):
        scores = get_importance(name)(model, scope, batches)
        assert set(scores) == set(scope), name
        assert all(s.shape == scope[n].shape for n, s in scores.items())
    assert not scope["model.layers.0.mlp.up_proj.weight"].requires_grad  # flag restored
    assert all(p.grad is None for p in named.values())  # .grad untouched
    scores = gradient(model, scope, batches)
    for n, g in summed.items():
        torch.testing.assert_close(scores[n], g.abs())


def test_save_and_load_round_trip(tmp_path, tiny):
    _, params, _ = tiny
    scores = magnitude(None, params, dtype=torch.bfloat16)
    save_importances(tmp_path / "imp.safetensors", scores, metadata={"measure": "magnitude"})
    loaded = load_importances(tmp_path / "imp.safetensors")
    assert loaded.keys() == scores.keys()
    assert loaded["lin.weight"].dtype == torch.bfloat16
    assert torch.equal(loaded["lin.weight"], scores["lin.weight"])


def test_unknown_measure_names_itself_and_the_known_ones():
    with pytest.raises(ValueError, match="'hessian'.*fisher.*magnitude"):
        get_importance("hessian")


@pytest.mark.parametrize("name", [n for n, m in IMPORTANCE_MEASURES.items() if not m.tracked])
def test_empty_scope_is_refused(name, tiny):
    model, _, batches = tiny
    kwargs = {"pretrained": {}} if name == "drift" else {}
    with pytest.raises(ValueError, match="empty parameter scope"):
        get_importance(name)(model, {}, batches, **kwargs)


def test_si_refuses_empty_scope_and_early_importance():
    with pytest.raises(ValueError, match="empty parameter scope"):
        SITracker().before_update({})
    with pytest.raises(ValueError, match="before any before_update"):
        SITracker().importance()


def test_no_batches_is_refused(tiny):
    model, params, _ = tiny
    with pytest.raises(ValueError, match="no batches"):
        fisher(model, params, [])
