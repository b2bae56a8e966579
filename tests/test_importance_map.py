"""Importance maps (per layer × module type, safetensors round trip), layout of names, mask overlap."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from cltune.analysis import ImportanceMap, importance_map, importance_masks, mask_overlap, task_batches
from cltune.analysis.layout import pivot, place
from cltune.selective.importance import gradient
from cltune.selective.masks import n_keep


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "model.language_model.layers.3.self_attn.q_proj.weight",
            ("model.language_model.layers.3.self_attn.q_proj", "language_model.layers.3", "self_attn.q_proj"),
        ),
        (
            "base_model.model.model.language_model.layers.0.mlp.up_proj.lora_A.default.weight",
            ("model.language_model.layers.0.mlp.up_proj", "language_model.layers.0", "mlp.up_proj"),
        ),
        (
            "base_model.model.model.language_model.layers.0.mlp.up_proj.base_layer.weight",
            ("model.language_model.layers.0.mlp.up_proj", "language_model.layers.0", "mlp.up_proj"),
        ),
        (
            "model.vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias",
            (
                "model.vision_tower.vision_model.encoder.layers.1.mlp.fc1",
                "vision_tower.vision_model.encoder.layers.1",
                "mlp.fc1",
            ),
        ),
        (
            "model.language_model.embed_tokens.weight",
            ("model.language_model.embed_tokens", "language_model", "embed_tokens"),
        ),
        ("lm_head.weight", ("lm_head", "(top)", "lm_head")),
    ],
)
def test_place_names_layer_and_module_type(name, expected):
    assert tuple(place(name)) == expected


def test_pivot_orders_layers_naturally():
    frame = pd.DataFrame(
        {
            "layer": ["layers.10", "layers.2", "layers.2"],
            "module_type": ["mlp", "mlp", "attn"],
            "v": [1.0, 2.0, 3.0],
        }
    )
    table = pivot(frame, "v")
    assert list(table.index) == ["layers.2", "layers.10"] and list(table.columns) == ["attn", "mlp"]
    assert table.loc["layers.2", "attn"] == 3.0 and pd.isna(table.loc["layers.10", "attn"])


@pytest.fixture
def batches(tiny, default_stream):
    _, processor = tiny
    return task_batches(default_stream.tasks[0], processor, n_examples=8, batch_size=4)


def test_importance_map_aggregates_per_layer_and_module_type(tiny, batches):
    model, _ = tiny
    imap = importance_map(model, batches, "gradient", info={"task": "parity"})
    lm = {n: p for n, p in model.named_parameters() if n.startswith(("model.language_model.", "lm_head"))}
    assert set(imap.scores) == set(lm)  # the language-model scope, by default
    direct = gradient(model, lm, batches)
    for name in lm:
        torch.testing.assert_close(imap.scores[name], direct[name])

    layers = model.config.text_config.num_hidden_layers
    table = imap.table("mean")
    assert list(table.index) == [
        "(top)",
        "language_model",
        *[f"language_model.layers.{i}" for i in range(layers)],
    ]
    q = imap.scores["model.language_model.layers.1.self_attn.q_proj.weight"]
    assert table.loc["language_model.layers.1", "self_attn.q_proj"] == pytest.approx(
        float(q.mean()), rel=1e-5
    )
    assert imap.table("sum").loc["language_model.layers.1", "self_attn.q_proj"] == pytest.approx(
        float(q.sum()), rel=1e-5
    )
    assert imap.table("max").loc["language_model.layers.1", "self_attn.q_proj"] == pytest.approx(
        float(q.max())
    )
    with pytest.raises(ValueError, match="unknown statistic 'median'"):
        imap.table("median")


def test_importance_map_of_a_peft_model_lines_up_with_the_base(tiny, batches):
    model, _ = tiny
    base_names = set(importance_map(model, batches, "magnitude").scores)
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    flags = {n: p.requires_grad for n, p in adapted.named_parameters()}
    imap = importance_map(adapted, batches, "gradient")
    assert set(imap.scores) == base_names  # the base weights, adapters left out
    assert flags == {n: p.requires_grad for n, p in adapted.named_parameters()}  # left as it was
    assert imap.table().loc["language_model.layers.0", "self_attn.q_proj"] > 0


def test_importance_map_save_load_round_trip_and_bad_files(tiny, batches, tmp_path):
    model, _ = tiny
    imap = importance_map(model, batches, "fisher", info={"task": "parity", "run": "r"})
    path = tmp_path / "importance-parity.safetensors"
    imap.save(path)
    loaded = ImportanceMap.load(path)
    assert loaded.method == "fisher" and loaded.info == {"task": "parity", "run": "r"}
    assert set(loaded.scores) == set(imap.scores)
    for name, score in imap.scores.items():
        torch.testing.assert_close(loaded.scores[name], score)
    pd.testing.assert_frame_equal(loaded.table(), imap.table())

    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImportanceMap.load(tmp_path / "missing.safetensors")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"importance map {damaged} is damaged"):
        ImportanceMap.load(damaged)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.ones(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an importance map written by cltune"):
        ImportanceMap.load(foreign)


def test_importance_map_rejects_measures_it_cannot_run(tiny, batches):
    model, _ = tiny
    with pytest.raises(ValueError, match="tracked during training"):
        importance_map(model, batches, "si")
    with pytest.raises(ValueError, match="unknown importance measure 'gradiant'"):
        importance_map(model, batches, "gradiant")


def test_mask_overlap_by_hand():
    masks = {
        "a": {"w": torch.tensor([True, True, False, False]), "v": torch.tensor([True])},
        "b": {"w": torch.tensor([True, False, True, False]), "v": torch.tensor([True])},
        "c": {"w": torch.tensor([False, False, False, True]), "v": torch.tensor([False])},
    }
    table = mask_overlap(masks)
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["a", "b"] == table.loc["b", "a"] == pytest.approx(2 / 4)  # {w0, v} of {w0, w1, w2, v}
    assert table.loc["a", "c"] == 0.0 and table.loc["c", "c"] == 1.0
    with pytest.raises(ValueError, match="masks of 'a' and 'd' cannot be compared"):
        mask_overlap({"a": masks["a"], "d": {"w": torch.ones(4, dtype=torch.bool)}})
    with pytest.raises(ValueError, match="at least two tasks"):
        mask_overlap({"a": masks["a"]})


def test_importance_masks_keep_the_top_ratio_of_each_tensor():
    scores = {"w": torch.arange(10.0), "v": torch.tensor([5.0, 1.0, 3.0, 2.0])}
    maps = {
        "t": ImportanceMap(scores, "gradient"),
        "u": ImportanceMap({k: -s for k, s in scores.items()}, "gradient"),
    }
    masks = importance_masks(maps, 0.5)
    assert masks["t"]["w"].tolist() == [False] * 5 + [True] * 5
    assert int(masks["u"]["v"].sum()) == n_keep(0.5, 4)
    assert mask_overlap(masks).loc["t", "u"] == 0.0
