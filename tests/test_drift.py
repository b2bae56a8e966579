"""Weight drift (‖Δθ‖/‖θ‖ per module, LoRA merged exactly) and representation drift (linear CKA)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from cltune.analysis import (
    drift_by,
    effective_weights,
    hidden_states,
    linear_cka,
    representation_drift,
    task_batches,
    weight_drift,
)


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from its HSIC definition with an explicit centring matrix H (Kornblith et al. 2019, eq. 3)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.mark.parametrize("n, p, q", [(12, 3, 5), (5, 20, 8)])  # feature-space and Gram-space branches
def test_linear_cka_equals_the_hsic_definition(n, p, q):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, p)), rng.normal(size=(n, q))
    y[:, :2] += 2 * x[:, :2]  # related, but not identical
    got = linear_cka(torch.tensor(x), torch.tensor(y))
    assert got == pytest.approx(hsic_cka(x, y), abs=1e-10)
    assert 0 < got < 1


def test_linear_cka_is_invariant_to_rotation_and_scale_but_not_to_noise():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(30, 6)))
    rotation, _ = torch.linalg.qr(torch.tensor(rng.normal(size=(6, 6))))
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + torch.tensor(rng.normal(size=(30, 6)))) < 0.9


def test_linear_cka_rejects_bad_input():
    with pytest.raises(ValueError, match="same n"):
        linear_cka(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least two samples"):
        linear_cka(torch.ones(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(4, 3), torch.randn(4, 3))


# Constants whose float64 column mean is not the constant itself; (5, 8) takes the Gram branch.
@pytest.mark.parametrize("value, n, p", [(0.1, 3, 2), (0.7, 7, 3), (123.456, 5, 8), (1e6 + 0.1, 7, 3)])
def test_linear_cka_rejects_a_constant_whose_mean_rounds(value, n, p):
    constant = torch.full((n, p), value, dtype=torch.float64)
    assert (constant - constant.mean(0)).abs().max() > 0
    other = torch.tensor(np.random.default_rng(n).normal(size=(n, p)))
    for x, y in ((constant, other), (other, constant)):
        with pytest.raises(ValueError, match="constant representation"):
            linear_cka(x, y)


def test_linear_cka_ignores_a_constant_column_and_keeps_tiny_real_variation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 2)), rng.normal(size=(9, 3))
    with_constant = np.concatenate([x, np.full((9, 1), 0.1)], axis=1)
    assert linear_cka(torch.tensor(with_constant), torch.tensor(y)) == pytest.approx(
        hsic_cka(x, y), abs=1e-12
    )
    # float32 features that differ only in their last bits around a large mean are not constant
    tiny = torch.tensor(1000.0 + 1e-3 * rng.normal(size=(9, 2)), dtype=torch.float32)
    exact = tiny.double().numpy() - tiny.double().numpy().mean(0)  # centred first: no cancellation
    assert linear_cka(tiny, torch.tensor(y)) == pytest.approx(hsic_cka(exact, y), abs=1e-9)


LAYER = "model.language_model.layers.0"


def test_weight_drift_by_hand():
    base = {
        f"{LAYER}.mlp.up_proj.weight": torch.tensor([[3.0, 4.0]]),
        f"{LAYER}.mlp.up_proj.bias": torch.tensor([0.0]),
        f"{LAYER}.input_layernorm.weight": torch.tensor([1.0, 1.0]),
        "lm_head.weight": torch.tensor([[2.0]]),
    }
    tuned = {  # a checkpoint-like dict: only what changed, plus one unchanged entry
        f"{LAYER}.mlp.up_proj.weight": torch.tensor([[3.0, 4.0]]),
        f"{LAYER}.mlp.up_proj.bias": torch.tensor([1.0]),
        f"{LAYER}.input_layernorm.weight": torch.tensor([1.0, 1.0]),
        "lm_head.weight": torch.tensor([[-1.0]]),
    }
    frame = weight_drift(base, tuned).set_index("module")
    up = frame.loc[f"{LAYER}.mlp.up_proj"]  # weight and bias pooled: ‖Δ‖ = 1, ‖θ‖ = 5
    assert (up.layer, up.module_type, up.numel) == ("language_model.layers.0", "mlp.up_proj", 3)
    assert up.relative == pytest.approx(1 / 5)
    assert frame.loc[f"{LAYER}.input_layernorm", "relative"] == 0
    assert frame.loc["lm_head", "relative"] == pytest.approx(3 / 2)
    per_layer = drift_by(weight_drift(base, tuned), "layer").set_index("layer")
    assert per_layer.loc["language_model.layers.0", "relative"] == pytest.approx(1 / math.sqrt(25 + 2))
    assert per_layer.loc["(top)", "relative"] == pytest.approx(3 / 2)


def test_weight_drift_rejects_names_the_base_lacks():
    base = {"a.weight": torch.ones(2)}
    with pytest.raises(ValueError, match="the base lacks.*'b.lora_A.weight'"):
        weight_drift(base, {"a.weight": torch.ones(2), "b.lora_A.weight": torch.ones(2)})
    with pytest.raises(ValueError, match="share no floating-point parameter"):
        weight_drift(base, {})


def _lora(model, seed: int = 0):
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero; give the adapter an effect
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    return peft_model


def test_weight_drift_of_a_lora_model_equals_peft_merge_and_unload(tiny):
    model, _ = tiny
    base = copy.deepcopy(model)
    adapted = _lora(model)
    merged = copy.deepcopy(adapted).merge_and_unload()
    ours = weight_drift(base, adapted).set_index("module")
    peft_merge = weight_drift(base, merged).set_index("module")
    assert ours.index.equals(peft_merge.index)
    np.testing.assert_allclose(ours["relative"], peft_merge["relative"], rtol=1e-5, atol=1e-7)
    moved = set(ours.index[ours["relative"] > 0])
    assert moved and all(m.endswith(("q_proj", "v_proj")) for m in moved)
    weights = effective_weights(adapted)
    assert set(weights) == {n for n, _ in base.named_parameters()}


def test_representation_drift_is_one_up_to_the_changed_layer(tiny, default_stream):
    model, processor = tiny
    batches = task_batches(default_stream.general[0], processor, split="test", n_examples=12, batch_size=6)
    n_layers = model.config.text_config.num_hidden_layers
    same = representation_drift(model, copy.deepcopy(model), batches)
    assert list(same["layer"]) == list(range(n_layers + 1))
    np.testing.assert_allclose(same["cka"], 1.0, atol=1e-9)

    changed = copy.deepcopy(model)
    with torch.no_grad():  # perturb decoder layer 2: hidden states 0..2 (before it) stay identical
        changed.model.language_model.layers[2].mlp.down_proj.weight.mul_(-3.0)
    model.train()
    frame = representation_drift(model, changed, batches)
    assert model.training, "the model's training mode is restored"
    np.testing.assert_allclose(frame["cka"][:3], 1.0, atol=1e-9)
    assert (frame["cka"][3:] < 0.999).all()
    np.testing.assert_allclose(frame["drift"], 1 - frame["cka"])

    tokens = hidden_states(model, batches, pooling="tokens")
    attended = sum(int(b["attention_mask"].sum()) for b in batches)
    assert len(tokens) == n_layers + 1 and tokens[0].shape == (attended, model.config.text_config.hidden_size)
    with pytest.raises(ValueError, match="pooling"):
        hidden_states(model, batches, pooling="max")
