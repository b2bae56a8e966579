"""Merge math: hand-checked values on tiny tensors, equality with PEFT's merge_utils, exact LoRA."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils import merge_utils
from torch import nn

from cltune.merging import (
    MERGE_METHODS,
    apply_task_vector,
    dare_linear_merge,
    dare_ties_merge,
    factorise_delta,
    get_merge_method,
    lora_delta_weights,
    magnitude_prune_merge,
    merge_lora_adapters,
    merge_lora_deltas,
    merge_lora_factors,
    merge_state_dicts,
    task_arithmetic_merge,
    task_vector,
    ties_merge,
    tsv_merge,
    wise_ft_merge,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


# Three task vectors of four entries; with density 0.5 each keeps its two largest |entries|:
#   τ1 = [ 4, -1,   2, 0.5] -> [ 4,  0, 2, 0]
#   τ2 = [ 2,  5, 0.1,  -1] -> [ 2,  5, 0, 0]
#   τ3 = [-3, -6, 0.5,   1] -> [-3, -6, 0, 0]
TIES_DELTAS = [t(4, -1, 2, 0.5), t(2, 5, 0.1, -1), t(-3, -6, 0.5, 1)]


# --- task vectors ---------------------------------------------------------------------------


def test_task_vector_subtracts_shared_float_keys_only() -> None:
    base = {"w": t(1, 2), "b": t(0.5), "only_base": t(1), "steps": torch.tensor([3])}
    tuned = {"w": t(4, 0), "b": t(1.5), "only_tuned": t(9), "steps": torch.tensor([7])}
    delta = task_vector(base, tuned)
    assert list(delta) == ["w", "b"]
    assert_same(delta["w"], t(3, -2))
    assert_same(delta["b"], t(1.0))


def test_bf16_task_vectors_are_float32_and_round_trip_exactly() -> None:
    # 0.0078125 - 256 = -255.9921875 needs 16 significant bits: bf16 (8 bits) would round it.
    base = {"w": torch.tensor([256.0, 3.0], dtype=torch.bfloat16)}
    tuned = {"w": torch.tensor([0.0078125, -1000.0], dtype=torch.bfloat16)}
    delta = task_vector(base, tuned)
    assert delta["w"].dtype == torch.float32
    assert delta["w"].tolist() == [-255.9921875, -1003.0]
    back = apply_task_vector(base, delta)["w"]
    assert back.dtype == torch.bfloat16 and torch.equal(back, tuned["w"])


def test_task_vector_names_the_key_on_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="'layer.weight'"):
        task_vector({"layer.weight": torch.zeros(2, 3)}, {"layer.weight": torch.zeros(3, 2)})


def test_apply_task_vector_scales_and_passes_other_keys_through() -> None:
    base = {"w": t(1, 2), "b": t(3)}
    result = apply_task_vector(base, {"w": t(2, -4)}, scale=0.5)
    assert_same(result["w"], t(2, 0))
    assert result["b"] is base["b"]
    tuned = {"w": t(5, 5), "b": t(-1)}
    round_trip = apply_task_vector(base, task_vector(base, tuned))
    assert_same(round_trip["w"], tuned["w"])
    assert_same(round_trip["b"], tuned["b"])


def test_apply_task_vector_refuses_unknown_keys_and_shapes() -> None:
    with pytest.raises(ValueError, match="extra"):
        apply_task_vector({"w": t(1)}, {"extra": t(1)})
    with pytest.raises(ValueError, match="'w'"):
        apply_task_vector({"w": t(1, 2)}, {"w": t(1, 2, 3)})


# --- each method on hand-checkable tensors --------------------------------------------------


def test_task_arithmetic_weighted_sum() -> None:
    assert_same(task_arithmetic_merge([t(1, 2), t(3, -1)], [1.0, 0.5]), t(2.5, 1.5))
    assert_same(task_arithmetic_merge([t(1, 2), t(3, -1)], None), t(4, 1))


def test_ties_trims_elects_by_mass_and_averages_agreeing_entries() -> None:
    # Trimmed sums per entry: [3, -1, 2, 0] -> elected signs [+, -, +, + (tie)].
    # Entry 0: 4 and 2 agree -> (4 + 2) / 2 = 3. Entry 1: only -6 agrees (mass beats the +5).
    # Entry 2: only 2. Entry 3: every trimmed value is 0 -> 0.
    assert_same(ties_merge(TIES_DELTAS, None, density=0.5), t(3, -6, 2, 0))


def test_ties_frequency_election_and_weights() -> None:
    # By sign count, entry 1 has one + and one - -> tie -> + wins, so 5 is kept.
    merged = ties_merge(TIES_DELTAS, None, density=0.5, majority_sign_method="frequency")
    assert_same(merged, t(3, 5, 2, 0))
    # Weights scale inside the disjoint mean only: entry 0 -> (1*4 + 2*2) / 2 = 4.
    assert_same(ties_merge(TIES_DELTAS, [1.0, 2.0, 1.0], density=0.5), t(4, -6, 2, 0))


def test_magnitude_prune_keeps_top_density_then_sums() -> None:
    # [4, 0, 2, 0] + 0.5 * [2, 5, 0, 0]
    merged = magnitude_prune_merge(TIES_DELTAS[:2], [1.0, 0.5], density=0.5)
    assert_same(merged, t(5, 2.5, 2, 0))


def test_trimming_merges_refuse_a_density_peft_would_accept_silently() -> None:
    # PEFT keeps nothing at density 0 and raises only below it; cltune names the valid range.
    for method in (ties_merge, magnitude_prune_merge):
        with pytest.raises(ValueError, match=r"density .* \(0, 1\]"):
            method(TIES_DELTAS, None, density=0.0)
    with pytest.raises(ValueError, match="'mass'.*'total', 'frequency'"):
        ties_merge(TIES_DELTAS, None, majority_sign_method="mass")
    with pytest.raises(ValueError, match="'mass'"):
        dare_ties_merge(TIES_DELTAS, None, majority_sign_method="mass")


def test_dare_drops_and_rescales_each_entry() -> None:
    delta = torch.arange(1.0, 2001.0)
    merged = dare_linear_merge([delta], None, density=0.25, rng=0)
    kept = merged != 0
    assert_same(merged[kept], delta[kept] / 0.25)  # survivors are rescaled by 1 / (1 - p)
    assert 0.2 < kept.float().mean().item() < 0.3  # about 1 - p of the entries survive


def test_dare_is_reproducible_from_a_seed_and_a_generator() -> None:
    deltas = [torch.randn(50), torch.randn(50)]
    first = dare_ties_merge(deltas, None, density=0.5, rng=7)
    assert torch.equal(first, dare_ties_merge(deltas, None, density=0.5, rng=7))
    from_generator = dare_ties_merge(deltas, None, density=0.5, rng=torch.Generator().manual_seed(7))
    assert torch.equal(first, from_generator)
    assert not torch.equal(first, dare_ties_merge(deltas, None, density=0.5, rng=8))


def test_dare_without_dropping_reduces_to_sum_and_ties() -> None:
    deltas = [t(1, -2), t(-3, 1)]
    assert_same(dare_linear_merge(deltas, [2.0, 1.0], density=1.0), t(-1, -3))
    # Sums [-2, -1] elect [-, -]: entry 0 keeps -3, entry 1 keeps -2.
    assert_same(dare_ties_merge(deltas, None, density=1.0), t(-3, -2))
    with pytest.raises(ValueError, match="density"):
        dare_linear_merge(deltas, None, density=0.0)


def test_wise_ft_interpolates_between_base_and_fine_tuned() -> None:
    base = {"w": t(1, 1)}
    tuned = {"w": t(11, -19)}
    delta = wise_ft_merge([task_vector(base, tuned)["w"]], None, alpha=0.3)
    assert_same(delta, t(3, -6))
    assert_same(apply_task_vector(base, {"w": delta})["w"], 0.7 * base["w"] + 0.3 * tuned["w"])
    # Several deltas: alpha times their uniform mean.
    assert_same(wise_ft_merge([t(2, 0), t(0, 4)], None, alpha=0.5), t(0.5, 1))


def test_tsv_sums_orthogonal_tasks_exactly() -> None:
    first = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    second = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert_same(tsv_merge([first, second]), torch.tensor([[3.0, 0.0], [0.0, 2.0]]))


def test_tsv_decorrelates_overlapping_tasks() -> None:
    # e1 e1ᵀ and u uᵀ with u = (e1 + e2)/√2 share direction e1; task arithmetic gives
    # [[1.5, .5], [.5, .5]]. TSV orthogonalises [e1, u] to a rotation Q, so the merge is
    # Q I Qᵀ = I.
    first = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    second = torch.full((2, 2), 0.5)
    assert_same(tsv_merge([first, second]), torch.eye(2))


def test_low_precision_deltas_merge_in_float32() -> None:
    deltas = [torch.tensor([1.0, 2.0], dtype=torch.bfloat16)] * 2
    for method in (task_arithmetic_merge, ties_merge, tsv_merge, wise_ft_merge):
        assert method(deltas, [0.7, 0.7]).dtype == torch.float32
    assert_same(task_arithmetic_merge(deltas, [0.7, 0.7]), t(1.4, 2.8))  # bf16 0.7 is 0.69921875


def test_tsv_keeps_fraction_of_each_task_and_averages_vectors() -> None:
    # Each 3x3 task keeps its top singular direction (fraction 1/3 of 3).
    first = torch.diag(t(5, 1, 0))
    second = torch.zeros(3, 3)
    second[2, 2] = 4.0
    assert_same(tsv_merge([first, second], fraction=1 / 3), torch.diag(t(5, 0, 4)))
    assert_same(tsv_merge([t(2, 4), t(4, 0)]), t(3, 2))  # non-matrix: mean


# --- equality with PEFT's merge_utils on random tensors -------------------------------------


@pytest.fixture
def random_deltas() -> tuple[list[torch.Tensor], list[float]]:
    generator = torch.Generator().manual_seed(0)
    deltas = [torch.randn(6, 7, generator=generator) for _ in range(3)]
    return deltas, [0.7, 1.3, -0.4]


def peft_weights(weights: list[float]) -> torch.Tensor:
    return torch.tensor(weights)


def test_task_arithmetic_equals_peft(random_deltas) -> None:
    deltas, weights = random_deltas
    expected = merge_utils.task_arithmetic(deltas, peft_weights(weights))
    assert_same(task_arithmetic_merge(deltas, weights), expected)


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
def test_ties_equals_peft(random_deltas, sign_method) -> None:
    deltas, weights = random_deltas
    expected = merge_utils.ties(deltas, peft_weights(weights), 0.3, sign_method)
    merged = ties_merge(deltas, weights, density=0.3, majority_sign_method=sign_method)
    assert_same(merged, expected)


def test_magnitude_prune_equals_peft(random_deltas) -> None:
    deltas, weights = random_deltas
    expected = merge_utils.magnitude_prune(deltas, peft_weights(weights), 0.4)
    assert_same(magnitude_prune_merge(deltas, weights, density=0.4), expected)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(dare_linear_merge, merge_utils.dare_linear), (dare_ties_merge, merge_utils.dare_ties)],
)
def test_dare_equals_peft_with_the_same_random_state(random_deltas, ours, theirs) -> None:
    # PEFT draws one torch.bernoulli mask per task vector, in order, from the global RNG.
    deltas, weights = random_deltas
    torch.manual_seed(123)
    expected = theirs(deltas, peft_weights(weights), 0.3)
    torch.manual_seed(123)
    assert_same(ours(deltas, weights, density=0.3), expected)  # global RNG
    assert_same(ours(deltas, weights, density=0.3, rng=123), expected)  # own generator
    assert not torch.equal(ours(deltas, weights, density=0.3, rng=124), expected)


# --- registry and state-dict helper ---------------------------------------------------------


def test_registry_resolves_every_method_and_rejects_unknown_names() -> None:
    assert get_merge_method("ties") is ties_merge
    deltas = [t(1, -2, 3, 0.5), t(-1, 2, 1, 0.25)]
    for name, method in MERGE_METHODS.items():
        merged = method(deltas, None)
        assert merged.shape == (4,), name
    with pytest.raises(ValueError, match=r"'fisher'.*dare_linear.*task_arithmetic.*ties"):
        get_merge_method("fisher")


def test_merge_state_dicts_key_by_key_with_missing_keys_as_zero() -> None:
    first = {"a": t(1, 2), "b": t(4)}
    second = {"a": t(3, 0), "c": t(5)}
    merged = merge_state_dicts([first, second], "task_arithmetic", [1.0, 2.0])
    assert list(merged) == ["a", "b", "c"]
    assert_same(merged["a"], t(7, 2))
    assert_same(merged["b"], t(4))
    assert_same(merged["c"], t(10))
    averaged = merge_state_dicts([first, second], wise_ft_merge, alpha=1.0)
    assert_same(averaged["b"], t(2))  # the missing delta counts as a zero in the mean


def test_merge_state_dicts_names_the_key_on_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="'layer.bias'"):
        merge_state_dicts([{"layer.bias": t(1, 2)}, {"layer.bias": t(1, 2, 3)}])
    with pytest.raises(ValueError, match="unknown merge method 'nope'"):
        merge_state_dicts([{"a": t(1)}], "nope")


def test_merge_state_dicts_one_seed_drives_all_keys() -> None:
    deltas = [{"x": torch.ones(64), "y": torch.ones(64)}]
    merged = merge_state_dicts(deltas, "dare_linear", density=0.5, rng=3)
    again = merge_state_dicts(deltas, "dare_linear", density=0.5, rng=3)
    assert all(torch.equal(merged[key], again[key]) for key in merged)
    assert not torch.equal(merged["x"], merged["y"])  # one stream, not a reseed per key


# --- LoRA -----------------------------------------------------------------------------------


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(8, 6)
        self.lin1 = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(self.lin0(x))


@pytest.fixture
def peft_pair():
    """A PEFT model with adapters 'one' (r=2, α=4, rsLoRA: s=4/√2) and 'two' (r=3, α=3 but 6 on
    lin1 through alpha_pattern), both with random (non-zero) A and B."""
    one = LoraConfig(
        r=2, lora_alpha=4, use_rslora=True, target_modules=["lin0", "lin1"], init_lora_weights=False
    )
    two = LoraConfig(
        r=3, lora_alpha=3, alpha_pattern={"lin1": 6}, target_modules=["lin0", "lin1"], init_lora_weights=False
    )
    return two_adapters(one, two, seed=0)


def two_adapters(one: LoraConfig, two: LoraConfig, seed: int):
    """A PEFT model of :class:`TwoLayers` with adapters 'one' and 'two' (random A and B), their state
    dicts and configs."""
    torch.manual_seed(seed)
    model = get_peft_model(TwoLayers(), one, adapter_name="one")
    model.add_adapter("two", two)
    states = [get_peft_model_state_dict(model, adapter_name=name) for name in ("one", "two")]
    return model, states, [one, two]


def peft_delta(model, module: str, adapter: str) -> torch.Tensor:
    return getattr(model.base_model.model, module).get_delta_weight(adapter)


def test_lora_delta_weights_match_peft_layers(peft_pair) -> None:
    model, states, configs = peft_pair
    assert "base_model.model.lin0.lora_A.weight" in states[0]
    for state, config, name in zip(states, configs, ("one", "two"), strict=True):
        deltas = lora_delta_weights(state, config)
        assert set(deltas) == {"base_model.model.lin0", "base_model.model.lin1"}
        for module in ("lin0", "lin1"):
            assert_same(deltas[f"base_model.model.{module}"], peft_delta(model, module, name))


def test_lora_keys_with_the_adapter_name_are_read_too(peft_pair) -> None:
    model, states, configs = peft_pair
    named = {k: v for k, v in model.state_dict().items() if ".lora_" in k and ".one." in k}
    assert "base_model.model.lin0.lora_A.one.weight" in named
    from_named = lora_delta_weights(named, configs[0])
    from_plain = lora_delta_weights(states[0], configs[0])
    for key, delta in from_plain.items():
        assert_same(from_named[key], delta)


def test_lora_refuses_what_it_cannot_merge_exactly(peft_pair) -> None:
    _, states, configs = peft_pair
    with pytest.raises(ValueError, match="lora_magnitude_vector"):
        lora_delta_weights({**states[0], "m.lora_magnitude_vector": torch.ones(3)}, configs[0])
    only_a = {k: v for k, v in states[0].items() if "lora_B" not in k}
    with pytest.raises(ValueError, match="only lora_A"):
        lora_delta_weights(only_a, configs[0])
    dora = LoraConfig(r=2, target_modules=["lin0"], use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        lora_delta_weights(states[0], dora)


def test_merged_lora_delta_is_the_weighted_sum_of_exact_deltas(peft_pair) -> None:
    model, states, configs = peft_pair
    merged = merge_lora_deltas(states, configs, "task_arithmetic", [0.6, -1.5])
    for module in ("lin0", "lin1"):
        expected = 0.6 * peft_delta(model, module, "one") - 1.5 * peft_delta(model, module, "two")
        assert_same(merged[f"base_model.model.{module}"], expected)


def test_factorise_respects_rank_and_is_optimal() -> None:
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(7, 3, generator=generator, dtype=torch.float64) @ torch.randn(
        3, 9, generator=generator, dtype=torch.float64
    )
    singular = torch.linalg.svdvals(delta)
    a, b = factorise_delta(delta, 2)
    assert a.shape == (2, 9) and b.shape == (7, 2)
    assert torch.linalg.matrix_rank(b @ a).item() <= 2
    # Eckart–Young: the error is exactly the dropped singular value.
    torch.testing.assert_close(torch.linalg.matrix_norm(delta - b @ a, ord=2), singular[2])
    # Singular values are split evenly between the factors.
    torch.testing.assert_close(torch.linalg.svdvals(a), singular[:2].sqrt())
    torch.testing.assert_close(torch.linalg.svdvals(b), singular[:2].sqrt())
    for rank in (3, 5, 12):  # exact once rank >= the true rank 3; padded past min(7, 9)
        a, b = factorise_delta(delta, rank)
        assert a.shape == (rank, 9) and b.shape == (7, rank)
        torch.testing.assert_close(b @ a, delta)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_merged_adapter_loads_into_peft_with_the_merged_delta(peft_pair, use_rslora) -> None:
    model, states, configs = peft_pair
    weights = [1.0, 0.5]
    merged = merge_lora_adapters(
        states, configs, rank=5, weights=weights, lora_alpha=10, use_rslora=use_rslora
    )
    assert merged.state_dict["base_model.model.lin0.lora_A.weight"].shape == (5, 8)
    assert merged.config.r == 5 and merged.config.target_modules == {"lin0", "lin1"}
    assert merged.config.use_rslora is use_rslora
    model.add_adapter("merged", merged.config)
    set_peft_model_state_dict(model, merged.state_dict, adapter_name="merged")
    for module in ("lin0", "lin1"):
        expected = peft_delta(model, module, "one") + 0.5 * peft_delta(model, module, "two")
        # rank 5 = 2 + 3 holds both adapters exactly
        assert_same(peft_delta(model, module, "merged"), expected)


def test_truncated_merge_equals_peft_svd_combination(peft_pair) -> None:
    model, states, configs = peft_pair
    weights = [0.8, 1.2]
    merged = merge_lora_adapters(states, configs, rank=2, weights=weights)
    # 'two' first: PEFT copies the first adapter's config, and with 'one''s use_rslora the new
    # adapter's scaling would be 2/√2 instead of the 1 its factors assume.
    model.add_weighted_adapter(["two", "one"], weights[::-1], "peft_svd", "svd", svd_rank=2)
    for module in ("lin0", "lin1"):
        a = merged.state_dict[f"base_model.model.{module}.lora_A.weight"]
        b = merged.state_dict[f"base_model.model.{module}.lora_B.weight"]
        assert torch.linalg.matrix_rank(b @ a).item() == 2
        torch.testing.assert_close(b @ a, peft_delta(model, module, "peft_svd"), rtol=1e-5, atol=1e-5)


def test_lora_merge_with_ties_matches_ties_on_the_exact_deltas(peft_pair) -> None:
    _, states, configs = peft_pair
    exact = [lora_delta_weights(sd, cfg) for sd, cfg in zip(states, configs, strict=True)]
    merged = merge_lora_deltas(states, configs, "ties", [1.0, 1.0], density=0.5)
    for module, delta in merged.items():
        expected = merge_utils.ties([d[module] for d in exact], torch.ones(2), 0.5)
        assert_same(delta, expected)


# --- LoRA factor-space merging (LoraHub / PEFT add_weighted_adapter) --------------------------


@pytest.fixture
def equal_rank_pair():
    """Adapters 'one' (r=3, α=6) and 'two' (r=3, α=3 but 12 on lin1), random A and B."""
    one = LoraConfig(r=3, lora_alpha=6, target_modules=["lin0", "lin1"], init_lora_weights=False)
    two = LoraConfig(
        r=3,
        lora_alpha=3,
        alpha_pattern={"lin1": 12},
        target_modules=["lin0", "lin1"],
        init_lora_weights=False,
    )
    return two_adapters(one, two, seed=1)


def test_factor_merge_by_hand_is_the_product_of_merged_factors() -> None:
    config = LoraConfig(r=1, lora_alpha=1, target_modules=["m"])
    a1, b1 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])
    a2, b2 = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0]])
    states = [{"m.lora_A.weight": a1, "m.lora_B.weight": b1}, {"m.lora_A.weight": a2, "m.lora_B.weight": b2}]
    merged = merge_lora_factors(states, [config, config], weights=[4.0, 1.0])
    # √4 = 2 on each factor of the first adapter: A = 2·[1, 2] + [0, 1], B = 2·3 + 1
    assert_same(merged.state_dict["m.lora_A.weight"], torch.tensor([[2.0, 5.0]]))
    assert_same(merged.state_dict["m.lora_B.weight"], torch.tensor([[7.0]]))
    assert merged.config.r == 1 and merged.config.lora_alpha == 1.0  # scaling 1


@pytest.mark.parametrize(
    ("method", "combination", "params"),
    [
        ("task_arithmetic", "linear", {}),
        ("ties", "ties", {"density": 0.5}),
        ("magnitude_prune", "magnitude_prune", {"density": 0.5}),
    ],
)
def test_factor_merge_equals_peft_add_weighted_adapter(equal_rank_pair, method, combination, params) -> None:
    model, states, configs = equal_rank_pair
    weights = [0.7, -1.3]
    merged = merge_lora_factors(states, configs, method, weights, **params)
    model.add_weighted_adapter(["one", "two"], weights, "peft", combination, **params)
    model.add_adapter("ours", merged.config)
    set_peft_model_state_dict(model, merged.state_dict, adapter_name="ours")
    for module in ("lin0", "lin1"):
        layer = getattr(model.base_model.model, module)
        assert_same(layer.lora_A["ours"].weight, layer.lora_A["peft"].weight)
        assert_same(layer.lora_B["ours"].weight, layer.lora_B["peft"].weight)
        assert_same(peft_delta(model, module, "ours"), peft_delta(model, module, "peft"))


def _ours_beside_peft(model, merged) -> None:
    model.add_adapter("ours", merged.config)
    set_peft_model_state_dict(model, merged.state_dict, adapter_name="ours")


def test_factor_merge_of_rslora_sources_has_peft_factors_but_not_its_sqrt_r_scaling() -> None:
    rank = 4
    one = LoraConfig(r=rank, lora_alpha=8, use_rslora=True, target_modules=["lin0"], init_lora_weights=False)
    two = LoraConfig(r=rank, lora_alpha=2, target_modules=["lin0"], init_lora_weights=False)
    model, states, configs = two_adapters(one, two, seed=2)
    merged = merge_lora_factors(states, configs, "task_arithmetic", [0.5, 2.0])
    model.add_weighted_adapter(["one", "two"], [0.5, 2.0], "peft", "linear")
    _ours_beside_peft(model, merged)
    layer = model.base_model.model.lin0
    assert_same(layer.lora_A["ours"].weight, layer.lora_A["peft"].weight)
    assert_same(layer.lora_B["ours"].weight, layer.lora_B["peft"].weight)
    # PEFT's merged config is the first adapter's (rsLoRA) with α = r: scaling r / √r = √r, not 1.
    assert model.peft_config["peft"].use_rslora and layer.scaling["peft"] == pytest.approx(rank**0.5)
    assert layer.scaling["ours"] == 1.0
    assert_same(peft_delta(model, "lin0", "peft"), rank**0.5 * peft_delta(model, "lin0", "ours"))


def test_factor_merge_of_one_adapter_applies_the_method_where_peft_falls_back_to_linear() -> None:
    config = LoraConfig(r=3, lora_alpha=6, target_modules=["lin0"], init_lora_weights=False)
    model, states, configs = two_adapters(config, config, seed=3)
    model.add_weighted_adapter(["one"], [1.5], "peft_ties", "ties", density=0.5)
    model.add_weighted_adapter(["one"], [1.5], "peft_linear", "linear")
    layer = model.base_model.model.lin0
    for side in ("lora_A", "lora_B"):  # PEFT's TIES of one adapter is its linear merge
        assert_same(getattr(layer, side)["peft_ties"].weight, getattr(layer, side)["peft_linear"].weight)
    _ours_beside_peft(model, merge_lora_factors(states[:1], configs[:1], "task_arithmetic", [1.5]))
    assert_same(peft_delta(model, "lin0", "ours"), peft_delta(model, "lin0", "peft_linear"))
    trimmed = merge_lora_factors(states[:1], configs[:1], "ties", [1.5], density=0.5)
    a = trimmed.state_dict["base_model.model.lin0.lora_A.weight"]
    assert (a == 0).float().mean() == pytest.approx(0.5, abs=0.1)  # TIES still keeps half the entries
    assert not (layer.lora_A["peft_ties"].weight == 0).any()


def test_factor_merge_refuses_mixed_ranks_and_nothing_to_merge(peft_pair) -> None:
    _, states, configs = peft_pair  # ranks 2 and 3
    with pytest.raises(ValueError, match=r"one rank, got ranks \[2, 3\].*merge_lora_adapters"):
        merge_lora_factors(states, configs)
    with pytest.raises(ValueError, match="at least one adapter; train a task"):
        merge_lora_factors([], [])
    # the exact ΔW merge takes the same adapters
    assert set(merge_lora_adapters(states, configs, rank=5).state_dict) == {
        f"base_model.model.lin{i}.lora_{f}.weight" for i in (0, 1) for f in "AB"
    }


@pytest.mark.parametrize("density", [0.0, -0.2, 1.5])
@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties", "magnitude_prune"])
def test_density_outside_the_unit_interval_is_refused(method, density) -> None:
    with pytest.raises(ValueError, match=r"density.*\(0, 1\]"):
        get_merge_method(method)(TIES_DELTAS, None, density=density)


def test_merging_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        merge_state_dicts([])
    with pytest.raises(ValueError, match="at least one"):
        ties_merge([], None, density=0.5)


def test_a_registered_merge_method_is_found_by_name_and_by_the_merge_presets() -> None:
    from cltune.merging import register_merge_method
    from cltune.strategies.plugins.task_vector_merge import merge_preset

    @register_merge_method("test-elementwise-max")
    def elementwise_max(deltas, weights=None):
        return torch.stack(list(deltas)).amax(dim=0)

    try:
        a, b = {"w": torch.tensor([1.0, -2.0])}, {"w": torch.tensor([0.5, 3.0])}
        merged = merge_state_dicts([a, b], method="test-elementwise-max")
        assert torch.equal(merged["w"], torch.tensor([1.0, 3.0]))
        merge_preset("my-merge", "test-elementwise-max", None, {})  # its options check accepts it
        with pytest.raises(ValueError, match="has no option"):
            merge_preset("my-merge", "test-elementwise-max", None, {"density": 0.5})
        with pytest.raises(ValueError, match="'test-elementwise-max' is already registered"):
            register_merge_method("test-elementwise-max")(elementwise_max)
    finally:
        del MERGE_METHODS["test-elementwise-max"]
