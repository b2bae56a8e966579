"""Masks (selection, HFT, random), their 1-bit storage and overlap, and exact masked updates."""

from __future__ import annotations

import copy
import json
import math
import re
import struct

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cltune.selective import (
    MaskedUpdate,
    density,
    density_per_tensor,
    hft_masks,
    hft_select,
    jaccard,
    jaccard_per_tensor,
    layer_of,
    load_masks,
    mask_gradients_,
    n_keep,
    pack_bits,
    random_masks,
    save_masks,
    topk_masks,
    unpack_bits,
)
from cltune.selective.importance import gradient

SHAPES = {
    "model.layers.0.self_attn.q_proj.weight": (4, 5),
    "model.layers.0.input_layernorm.weight": (7,),
    "model.layers.1.mlp.up_proj.weight": (6, 3),
    "model.embed_tokens.weight": (9, 2),
}


def scores(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()}


def kept_beat_dropped(group: list[str], s: dict, masks: dict) -> bool:
    kept = torch.cat([s[n][masks[n]] for n in group])
    dropped = torch.cat([s[n][~masks[n]] for n in group])
    return not len(kept) or not len(dropped) or bool(kept.min() >= dropped.max())


def test_layer_of_parses_the_layer_prefix():
    assert layer_of("model.language_model.layers.3.mlp.up_proj.weight") == ("model.language_model.layers.3")
    assert layer_of("vision_tower.encoder.layers.3.fc1.weight") == "vision_tower.encoder.layers.3"
    assert layer_of("model.embed_tokens.weight") is None


def test_n_keep_rounds_to_nearest():
    assert [n_keep(0.3, 10), n_keep(0.25, 6), n_keep(1.0, 7), n_keep(0.01, 20)] == [3, 2, 7, 0]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 1.0])
def test_tensor_granularity_keeps_exact_count_of_the_largest(ratio):
    s = scores()
    masks = topk_masks(s, ratio, "tensor")
    for name, m in masks.items():
        assert m.dtype == torch.bool and m.shape == s[name].shape
        assert int(m.sum()) == n_keep(ratio, m.numel())
        assert kept_beat_dropped([name], s, masks)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_layer_granularity_counts_per_layer(ratio):
    s = scores()
    masks = topk_masks(s, ratio, "layer")
    groups = {
        "0": [n for n in s if ".layers.0." in n],
        "1": [n for n in s if ".layers.1." in n],
        "none": ["model.embed_tokens.weight"],
    }
    for group in groups.values():
        assert sum(int(masks[n].sum()) for n in group) == n_keep(ratio, sum(s[n].numel() for n in group))
        assert kept_beat_dropped(group, s, masks)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_global_granularity_counts_over_everything(ratio):
    s = scores()
    masks = topk_masks(s, ratio, "global")
    total = sum(t.numel() for t in s.values())
    assert sum(int(m.sum()) for m in masks.values()) == n_keep(ratio, total)
    assert kept_beat_dropped(list(s), s, masks)


def test_layer_and_tensor_granularity_differ():
    s = {"m.layers.0.a": torch.tensor([10.0, 9.0]), "m.layers.0.b": torch.tensor([1.0, 2.0])}
    per_layer = topk_masks(s, 0.5, "layer")
    per_tensor = topk_masks(s, 0.5, "tensor")
    assert per_layer["m.layers.0.a"].tolist() == [True, True]
    assert per_layer["m.layers.0.b"].tolist() == [False, False]
    assert per_tensor["m.layers.0.a"].tolist() == [True, False]
    assert per_tensor["m.layers.0.b"].tolist() == [False, True]


def test_ties_still_give_the_exact_count():
    masks = topk_masks({"a": torch.ones(10), "b": torch.zeros(2)}, 0.5, "global")
    assert int(masks["a"].sum()) + int(masks["b"].sum()) == 6
    assert int(masks["b"].sum()) == 0


def test_random_masks_are_seeded_and_exact():
    s = scores()
    a, b, c = (random_masks(s, 0.3, seed=k) for k in (7, 7, 8))
    assert all(torch.equal(a[n], b[n]) for n in s)
    assert any(not torch.equal(a[n], c[n]) for n in s)
    for m in a.values():
        assert int(m.sum()) == n_keep(0.3, m.numel())


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1])
def test_bad_ratios_are_refused_with_value_and_range(ratio):
    for select in (
        lambda: topk_masks(scores(), ratio),
        lambda: random_masks(scores(), ratio),
        lambda: hft_select(scores(), ratio),
    ):
        with pytest.raises(ValueError, match=rf"\(0, 1\], got {re.escape(str(ratio))}$"):
            select()


def test_unknown_granularity_is_refused():
    with pytest.raises(ValueError, match="granularity"):
        topk_masks(scores(), 0.5, "row")


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


def test_hft_freezes_half_of_each_layers_matrices_seeded():
    params = dict(tiny_llama().named_parameters())
    trained = hft_select(params, seed=3)
    for layer in (0, 1):
        attn = [n for n in trained if f"layers.{layer}.self_attn." in n]
        mlp = [n for n in trained if f"layers.{layer}.mlp." in n]
        assert len(attn) == 2  # 2 of q, k, v, o
        assert len(mlp) in (1, 2)  # half of gate, up, down: floor or ceiling
    assert trained == hft_select(params, seed=3)
    assert any(hft_select(params, seed=k) != trained for k in range(4, 10))

    masks = hft_masks(params, seed=3)
    for name, m in masks.items():
        if params[name].dim() == 1:
            assert bool(m.all())  # norms stay trainable
        else:
            assert bool(m.all()) if name in trained else not bool(m.any())


def test_pack_bits_layout():
    mask = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    assert pack_bits(mask).tolist() == [0b10000001, 0b10000000]
    assert torch.equal(unpack_bits(pack_bits(mask), (9,)), mask)


def test_saved_masks_round_trip_at_one_bit_per_entry(tmp_path):
    g = torch.Generator().manual_seed(0)
    masks = {
        "a": torch.rand(3, 5, generator=g) > 0.5,
        "b": torch.rand(17, generator=g) > 0.3,
        "c": torch.rand(4, 2, 8, generator=g) > 0.9,
    }
    path = tmp_path / "masks.safetensors"
    save_masks(path, masks)
    loaded = load_masks(path)
    assert loaded.keys() == masks.keys()
    for name, m in masks.items():
        assert loaded[name].dtype == torch.bool and torch.equal(loaded[name], m)

    raw = path.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    data_bytes = len(raw) - 8 - header_len
    assert data_bytes == sum(math.ceil(m.numel() / 8) for m in masks.values())  # 3 + 3 + 8
    assert data_bytes * 8 < sum(m.numel() for m in masks.values()) + 8 * len(masks)
    assert all(header[n]["dtype"] == "U8" for n in masks)


def test_density_and_jaccard_by_hand():
    a = {"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "y": torch.tensor([1, 0])}
    b = {"x": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "y": torch.tensor([1, 0])}
    assert density(a) == 3 / 6
    assert density_per_tensor(a) == {"x": 0.5, "y": 0.5}
    assert jaccard_per_tensor(a, b) == {"x": 1 / 3, "y": 1.0}
    assert jaccard(a, b) == 2 / 4  # ∩ = {x0, y0}, ∪ = {x0, x1, x2, y0}
    empty = {"z": torch.zeros(3, dtype=torch.bool)}
    assert jaccard(empty, empty) == 1.0
    with pytest.raises(ValueError, match="different parameters"):
        jaccard(a, {"x": b["x"]})


# --- exact masked updates on a real tiny Llama -------------------------------------------


def llama_batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(0, 64, (2, 8), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    return {"input_ids": ids, "labels": labels}


def llama_and_scope() -> tuple[LlamaForCausalLM, dict[str, torch.nn.Parameter]]:
    model = tiny_llama()
    scope = {}
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("model.layers."))
        if p.requires_grad:
            scope[name] = p
    return model, scope


def train(model, optimizer, steps: int, masked: MaskedUpdate | None = None, first: int = 0):
    for step in range(first, first + steps):
        model(**llama_batch(step)).loss.backward()
        if masked is not None:
            masked.after_backward()
            masked.before_update()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def snapshot(params) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in params.items()}


def assert_exact_outside(params, masks, before) -> None:
    for name, m in masks.items():
        p = params[name].detach()
        assert torch.equal(p[~m], before[name][~m]), name
    moved = sum(int((params[n].detach()[m] != before[n][m]).sum()) for n, m in masks.items())
    assert moved > 0.9 * sum(int(m.sum()) for m in masks.values())


def test_masked_adamw_keeps_frozen_entries_bit_identical_across_experiences():
    model, scope = llama_and_scope()
    # Experience 1: GMT-style mask from gradients, fresh AdamW with weight decay.
    masks1 = topk_masks(gradient(model, scope, [llama_batch(100)]), 0.3, "layer")
    opt1 = torch.optim.AdamW(scope.values(), lr=1e-2, weight_decay=0.1)
    masked = MaskedUpdate(opt1, scope, masks1)
    assert opt1.param_groups[0]["weight_decay"] == 0.0
    before = snapshot(scope)
    train(model, opt1, 4, masked)
    masked.close()
    assert opt1.param_groups[0]["weight_decay"] == 0.1
    assert_exact_outside(scope, masks1, before)

    # Experience 2: the mask changes; new optimizer.
    masks2 = random_masks(scope, 0.3, seed=1)
    opt2 = torch.optim.AdamW(scope.values(), lr=1e-2, weight_decay=0.1)
    masked = MaskedUpdate(opt2, scope, masks2)
    before = snapshot(scope)
    train(model, opt2, 4, masked, first=10)
    masked.close()
    assert_exact_outside(scope, masks2, before)

    # Experience 3: mask changes again but opt2 (with non-zero moments) is kept.
    masked = MaskedUpdate(opt2, scope, masks1)
    before = snapshot(scope)
    train(model, opt2, 3, masked, first=20)
    masked.close()
    assert_exact_outside(scope, masks1, before)


def test_controls_show_what_breaks_exactness():
    model, scope = llama_and_scope()
    masks = random_masks(scope, 0.3, seed=1)
    # Zeroing gradients alone: AdamW's own weight decay still moves frozen entries.
    opt = torch.optim.AdamW(scope.values(), lr=1e-2, weight_decay=0.1)
    before = snapshot(scope)
    for step in range(2):
        model(**llama_batch(step)).loss.backward()
        mask_gradients_(scope, masks)
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert any(not torch.equal(scope[n].detach()[~m], before[n][~m]) for n, m in masks.items())
    # Keeping an optimizer with momentum without clearing its state: frozen entries drift.
    opt = torch.optim.AdamW(scope.values(), lr=1e-2, weight_decay=0.0)
    train(model, opt, 2)
    before = snapshot(scope)
    model(**llama_batch(5)).loss.backward()
    mask_gradients_(scope, masks)
    opt.step()
    assert any(not torch.equal(scope[n].detach()[~m], before[n][~m]) for n, m in masks.items())


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        lambda ps: torch.optim.SGD(ps, lr=1e-1, momentum=0.9, weight_decay=0.1),
    ],
    ids=["adamw-decoupled", "sgd-coupled"],
)
def test_full_mask_reproduces_the_plain_optimizer_bit_for_bit(make):
    model, scope = llama_and_scope()
    reference = copy.deepcopy(model)
    ref_scope = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    full = {n: torch.ones_like(p, dtype=torch.bool) for n, p in scope.items()}
    opt = make(list(scope.values()))
    train(model, opt, 3, MaskedUpdate(opt, scope, full))
    ref_opt = make(list(ref_scope.values()))
    train(reference, ref_opt, 3)
    assert all(torch.equal(scope[n], ref_scope[n]) for n in scope)


def test_masked_sgd_with_coupled_decay_is_exact():
    model, scope = llama_and_scope()
    masks = random_masks(scope, 0.2, seed=4)
    opt = torch.optim.SGD(scope.values(), lr=1e-1, momentum=0.9, weight_decay=0.1)
    before = snapshot(scope)
    train(model, opt, 3, MaskedUpdate(opt, scope, masks))
    assert_exact_outside(scope, masks, before)


def test_mask_shape_mismatch_is_refused():
    model, scope = llama_and_scope()
    opt = torch.optim.AdamW(scope.values())
    name = next(iter(scope))
    with pytest.raises(ValueError, match="mask shape"):
        MaskedUpdate(opt, scope, {name: torch.ones(3, dtype=torch.bool)})
