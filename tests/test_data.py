"""Data: built-in sources on real data, recipes and their errors, LLaVA JSON, encoding."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from PIL import Image

from cltune.data.encode import IGNORE_INDEX, Encoder, collate
from cltune.data.recipe import build_stream, load_stream, read_recipe
from cltune.data.sources import get_source
from cltune.data.sources.llava_json import read_llava_json
from cltune.data.task import Stream, Task


def test_easyvqa_question_types_have_their_own_answers():
    colour = get_source("easyvqa")("train", 50, 0, question_type="color")
    shape = get_source("easyvqa")("test", 50, 0, question_type="shape")
    assert set(colour["answer"]) <= {"black", "blue", "brown", "gray", "green", "red", "teal", "yellow"}
    assert set(shape["answer"]) <= {"circle", "rectangle", "triangle"}
    assert isinstance(colour.features["image"], datasets.Image)
    assert colour[0]["image"].size == (64, 64)


def test_digits_question_types_derive_answers_from_the_label():
    label = get_source("digits")("train", 40, 3, question_type="label")
    parity = get_source("digits")("train", 40, 3, question_type="parity")
    plus = get_source("digits")("train", 40, 3, question_type="plus_one")
    for a, b, c in zip(label["answer"], parity["answer"], plus["answer"], strict=True):
        assert b == ("even" if int(a) % 2 == 0 else "odd")
        assert int(c) == int(a) + 1
    assert label[0]["image"].size == (8, 8)


def test_subsets_are_deterministic_and_bounded():
    first = get_source("digits")("test", 30, 7)["answer"]
    again = get_source("digits")("test", 30, 7)["answer"]
    other = get_source("digits")("test", 30, 8)["answer"]
    assert first == again and first != other
    with pytest.raises(ValueError, match="asked for 5000 samples but only"):
        get_source("digits")("train", 5000, 0)


def test_mnist_and_cifar10_read_the_shared_data_folder():
    mnist = get_source("mnist")("test", 20, 0, classes=[3, 7])
    assert set(mnist["answer"]) <= {"3", "7"} and mnist[0]["image"].size == (28, 28)
    cifar = get_source("cifar10")("test", 20, 0, classes=["cat", "ship"])
    assert set(cifar["answer"]) <= {"cat", "ship"} and cifar[0]["image"].size == (32, 32)


def test_data_folder_without_the_file_is_a_clear_error(tmp_path, monkeypatch):
    from cltune.data.sources import mnist

    mnist._arrays.cache_clear()
    monkeypatch.setenv("CLTUNE_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no mnist_from_png.npz"):
        get_source("mnist")("test", 5, 0)
    mnist._arrays.cache_clear()


def test_default_stream_builds(default_stream):
    assert default_stream.task_names == ["parity", "plus_one", "greater_than_4"]
    assert default_stream.general_names == ["digit"]
    assert [len(t.train) for t in default_stream.tasks] == [400, 400, 400]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 'x'\n[[tasks]\n", "malformed TOML"),
        ("[[tasks]]\nname='a'\nsource='digits'\nqestion_type='parity'\n", "Did you mean 'question_type'"),
        ("[[tasks]]\nname='a'\nsource='digitz'\n", "unknown task source 'digitz'"),
        ("[[tasks]]\nname='a'\nsource='digits'\ntrain_size='many'\n", "train_size must be an integer"),
        ("[[tasks]]\nname='a'\nsource='digits'\ntest_size=0\n", "test_size must be at least 1"),
        ("name='x'\n", "has no tasks"),
        ("[[tasks]]\nsource='digits'\n", "missing required key 'name'"),
        ("strategies = 1\n[[tasks]]\nname='a'\nsource='digits'\n", "Did you mean 'strategy'"),
    ],
)
def test_recipe_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_recipe(path)


def test_missing_recipe_file_and_unknown_stream():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_recipe("no/such/recipe.toml")
    with pytest.raises(ValueError, match="unknown stream 'defualt'.*Did you mean 'default'"):
        read_recipe("defualt")


def test_empty_task_and_duplicate_names_are_refused():
    empty = datasets.Dataset.from_dict({"question": [], "answer": []})
    one = datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    with pytest.raises(ValueError, match="empty test split"):
        Task("t", one, empty)
    with pytest.raises(ValueError, match="empty train split"):
        Stream("s", [Task("t", empty, one)])
    with pytest.raises(ValueError, match="must be unique"):
        Stream("s", [Task("t", one, one)], general=[Task("t", one, one)])


def _llava_files(tmp_path, records):
    Image.new("RGB", (16, 16), "red").save(tmp_path / "red.png")
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_llava_json_loads_every_question_answer_pair(tmp_path):
    path = _llava_files(
        tmp_path,
        [
            {
                "id": "1",
                "image": "red.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour?"},
                    {"from": "gpt", "value": "red"},
                    {"from": "human", "value": "Is it round?"},
                    {"from": "gpt", "value": "no"},
                ],
            },
            {"id": "2", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        ],
    )
    examples = read_llava_json(path)
    assert [(e["question"], e["answer"]) for e in examples] == [
        ("What colour?", "red"),
        ("Is it round?", "no"),
        ("2+2?", "4"),
    ]
    assert examples[0]["image"].endswith("red.png") and examples[2]["image"] is None
    recipe = tmp_path / "llava.toml"
    recipe.write_text(
        f"[[tasks]]\nname='mine'\nsource='llava_json'\ntrain_file='{path}'\ntest_file='{path}'\n"
    )
    stream = load_stream(recipe)
    assert len(stream.tasks[0].train) == 3 and stream.tasks[0].has_images


@pytest.mark.parametrize(
    ("record", "error", "message"),
    [
        (
            {
                "image": "red.png",
                "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "x"}],
            },
            ValueError,
            "<image>",
        ),
        (
            {"image": "red.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]},
            ValueError,
            "no answer turn",
        ),
        (
            {
                "image": "blue.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat?"},
                    {"from": "gpt", "value": "x"},
                ],
            },
            FileNotFoundError,
            "blue.png.*does not exist",
        ),
    ],
)
def test_llava_json_errors(tmp_path, record, error, message):
    with pytest.raises(error, match=message):
        read_llava_json(_llava_files(tmp_path, [record]))


def test_encoder_labels_cover_only_the_answer(tiny, default_stream):
    _, processor = tiny
    encoder = Encoder(processor)
    task = default_stream.tasks[0]
    row = encoder.encode(task.train, 0, task.name, train=True)
    answer_ids = row["input_ids"][0][row["labels"][0] != IGNORE_INDEX]
    assert encoder.tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == task.train[0]["answer"]
    prompt = encoder.encode(task.train, 0, task.name, train=False)
    n = prompt["input_ids"].shape[1]
    assert torch.equal(prompt["input_ids"][0], row["input_ids"][0][:n])
    batch = collate([row, encoder.encode(task.train, 1, task.name, train=True)], encoder.pad_id)
    assert batch["pixel_values"].shape[0] == 2 and batch["labels"].shape == batch["input_ids"].shape


def test_built_stream_is_reproducible():
    resolved = read_recipe("default")
    a, b = build_stream(resolved), build_stream(resolved)
    assert a.tasks[1].test["answer"] == b.tasks[1].test["answer"]
