"""The real streams (split-MNIST, split-CIFAR-10, mixed-VQA), their data sources, and a CoIN/UCIT
(LLaVA-JSON) stream run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DIGIT_GENERAL

from cltune.data.recipe import build_stream, read_recipe


def _small(name: str, train: int = 4, test: int = 4):
    recipe = read_recipe(name)
    for task in [*recipe["tasks"], *recipe["general"]]:
        task["train_size"], task["test_size"] = min(train, task["train_size"]), min(test, task["test_size"])
    return build_stream(recipe)


@pytest.mark.parametrize(
    ("name", "classes"),
    [
        ("split-mnist", [{"0", "1"}, {"2", "3"}, {"4", "5"}, {"6", "7"}, {"8", "9"}]),
        (
            "split-cifar10",
            [
                {"airplane", "automobile"},
                {"bird", "cat"},
                {"deer", "dog"},
                {"frog", "horse"},
                {"ship", "truck"},
            ],
        ),
    ],
)
def test_split_streams_have_five_two_class_tasks(name, classes):
    stream = _small(name, train=20, test=20)
    assert len(stream.tasks) == 5
    for task, wanted in zip(stream.tasks, classes, strict=True):
        assert set(task.train["answer"]) == wanted and set(task.test["answer"]) <= wanted
        assert task.test[0]["image"].size[0] >= 28
    assert stream.general_names == ["captions", "lm_facts", "lm_text"]


def test_mixed_vqa_has_six_kinds_of_question():
    stream = _small("mixed-vqa", train=30, test=8)
    assert stream.task_names == [
        "mnist_digit", "cifar_animal", "cifar_vehicle", "vqa_colour", "vqa_shape", "vqa_yes_no"
    ]  # fmt: skip
    answers = {t.name: set(t.train["answer"]) for t in stream.tasks}
    assert answers["mnist_digit"] <= set("0123456789")
    assert answers["cifar_animal"] <= {"bird", "cat", "deer", "dog", "frog", "horse"}
    assert answers["cifar_vehicle"] <= {"airplane", "automobile", "ship", "truck"}
    assert answers["vqa_yes_no"] == {"yes", "no"}
    assert answers["vqa_shape"] <= {"circle", "rectangle", "triangle"}
    assert not answers["vqa_colour"] & answers["vqa_shape"]
    facts = stream.general[1]
    assert not facts.has_images and all(a.startswith("The capital of") for a in facts.test["answer"])
    text = stream.general[2]
    assert text.metric == "token_accuracy" and not text.has_images


def test_caption_mixture_covers_the_three_kinds_of_image():
    from cltune.data.sources.captions import captions

    data = captions("train", 30, 0)
    kinds = [
        a.split()[1] for a in data["answer"]
    ]  # "a handwritten digit 3", "a photo of a cat", "a red circle"
    assert kinds.count("handwritten") == 10 and kinds.count("photo") == 10
    assert all(a.startswith(("a ", "an ")) for a in data["answer"])
    assert set(captions("test", 9, 0, dataset="cifar10")["answer"]) <= {
        f"a photo of {'an' if c[0] in 'aeiou' else 'a'} {c}"
        for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    }


def test_lm_facts_train_and_test_are_disjoint():
    from cltune.data.sources.lm_facts import lm_facts

    train, test = lm_facts("train", None, 0), lm_facts("test", None, 0)
    assert len(test) >= 15 and not set(train["question"]) & set(test["question"])


@pytest.mark.parametrize(
    ("module", "filename"), [("mnist", "mnist_from_png.npz"), ("cifar10", "cifar10_jpg.zip")]
)
def test_data_folder_without_the_files_names_the_fix(module, filename, tmp_path, monkeypatch):
    import importlib

    source = importlib.import_module(f"cltune.data.sources.{module}")
    cached = source._arrays if module == "mnist" else source._index
    monkeypatch.setenv("CLTUNE_DATA_DIR", str(tmp_path))
    cached.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=rf"CLTUNE_DATA_DIR={tmp_path} has no {filename}.*unset"):
            build_stream({**read_recipe("split-mnist" if module == "mnist" else "split-cifar10")})
    finally:
        cached.cache_clear()


def _write_coin_task(folder, name: str, question: str, answer_of, rows: dict[str, np.ndarray]) -> None:
    """A CoIN-style task: ``{name}/train.json``, ``{name}/test.json`` and images under ``images/``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (folder / "images").mkdir(exist_ok=True)
    for split, idx in rows.items():
        records = []
        for i in idx:
            path = f"images/{i}.png"
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / path)
            records.append(
                {
                    "id": f"{name}-{i}",
                    "image": path,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{question}"},
                        {"from": "gpt", "value": answer_of(int(digits.target[i]))},
                    ],
                }
            )
        (folder / name).mkdir(exist_ok=True)
        (folder / name / f"{split}.json").write_text(json.dumps(records))


def test_coin_format_stream_runs_end_to_end(tmp_path, tiny_cached):
    import cltune

    rows = {"train": np.arange(0, 48), "test": np.arange(1700, 1716)}
    _write_coin_task(
        tmp_path, "Parity", "Is the digit even or odd?", lambda d: "even" if d % 2 == 0 else "odd", rows
    )
    _write_coin_task(
        tmp_path, "Small", "Is the digit smaller than 5?", lambda d: "yes" if d < 5 else "no", rows
    )
    recipe = tmp_path / "coin.toml"
    tasks = "".join(
        f'\n[[tasks]]\nname = "{n}"\nsource = "llava_json"\ntrain_file = "{tmp_path}/{n}/train.json"\n'
        f'test_file = "{tmp_path}/{n}/test.json"\nimage_folder = "{tmp_path}"\n'
        for n in ("Parity", "Small")
    )
    recipe.write_text(
        f'name = "coin-mini"\nseed = 0\n{tasks}{DIGIT_GENERAL}\n[train]\nlr = 1e-3\nbatch_size = 16\n'
    )
    result = cltune.run(recipe, "naive", model="tiny", out=tmp_path / "runs", max_steps=4, progress=False)
    assert result.matrix.values.shape == (3, 3)
    assert np.isfinite(result.matrix.values).all()
    stages = [json.loads((result.run_dir / "predictions" / f"stage-{n}.json").read_text()) for n in (0, 1)]
    assert all(len(stage[name]) == 16 for stage in stages for name in ("Parity", "Small", "digit"))
    # training on the JSON task's rows changed what the model answers to its questions
    assert stages[0]["Parity"] != stages[1]["Parity"]
