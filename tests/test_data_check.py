"""Loaders of the benchmark packs' on-disk layouts, and `cltune data check` on tiny copies of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pack_files import write_coin_textvqa, write_mllm_cl_ocr, write_packs, write_recipe, write_ucit_arxivqa

from cltune.cli import main
from cltune.data.recipe import load_stream
from cltune.data.sources.llava_json import read_llava_json


def _check(recipe: Path, capsys) -> tuple[int, str]:
    code = main(["data", "check", str(recipe)])
    return code, capsys.readouterr().out


def _edit(path: Path, change) -> None:
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))


# --- loaders -------------------------------------------------------------------------------------


def test_every_pack_layout_loads(tmp_path):
    stream = load_stream(write_packs(tmp_path))
    arxiv, textvqa, ocr = stream.tasks
    assert arxiv.test[0]["question"].startswith("What does figure 0 show?") and arxiv.test["answer"] == [
        "A",
        "B",
        "C",
    ]
    assert textvqa.test[0]["answers"] == ["stop"] * 7 + ["sign"] * 3 and textvqa.test[0]["answer"] == "stop"
    assert ocr.test[2]["image"].size == (8, 8) and ocr.test["answer"] == ["text0", "text1", "text2"]
    caption = stream.general[0].test
    assert caption["answers"][1] == ["a can of beans", "a food can"]  # image id 2 ↔ the second question


def test_question_jsonl_loads_like_json(tmp_path):
    spec = write_ucit_arxivqa(tmp_path)
    records = json.loads(spec["test_file"].read_text())
    jsonl = tmp_path / "question.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records))
    assert read_llava_json(jsonl, spec["image_folder"]) == read_llava_json(
        spec["test_file"], spec["image_folder"]
    )


def _question(**fields) -> dict:
    return {"question_id": 1, "image": "a.png", "text": "What?", "answer": "x", **fields}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [{"image": "a.png", "text": "What?"}],
            r"record 0 \(id \?\): no 'question_id'; every record of a question file",
        ),
        (
            [_question(), _question()],
            r"record 1 \(id 1\): id '1' repeats \(record 0 has it too\); give each record",
        ),
        (
            [{"id": "r", "image": "a.png", "conversations": "<image>\nWhat? x"}],
            r"record 0 \(id r\): 'conversations' must be a non-empty list of \{\"from\"",
        ),
        (
            [{"id": "r", "image": "a.png", "question": "What?"}],
            r"neither 'conversations' .* nor 'text' .*give one of",
        ),
        (
            [{"question_id": 1, "image": "a.png", "text": "What?"}],
            r"no 'answer'; .*or set answer_file to the pack's",
        ),
        ({"questions": []}, r"expected a list of LLaVA records, got a JSON object"),
    ],
)
def test_question_file_errors(tmp_path, records, message):
    write_ucit_arxivqa(tmp_path)  # any image
    (tmp_path / "a.png").write_bytes((tmp_path / "UCIT/datasets/ArxivQA/images/test_0.png").read_bytes())
    path = tmp_path / "test.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=f"test.json.*{message}"):
        read_llava_json(path)


def test_missing_images_are_counted_in_one_error(tmp_path):
    spec = write_ucit_arxivqa(tmp_path)
    for n in (0, 2):
        (spec["image_folder"] / f"ArxivQA/images/test_{n}.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"test.json record 0 \(id arxiv_test_0\): image '.*test_0.png' does not exist "
        r"\(and 1 more records' images\); set image_folder",
    ):
        read_llava_json(spec["test_file"], spec["image_folder"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda a: a["data"].pop(),
            r"has no answer for 1 of the 3 questions \(question_id 34604\); give the answer",
        ),
        (
            lambda a: a["data"].append(a["data"][0]),
            r"row 3: question_id '34602' repeats; keep one row per question",
        ),
        (lambda a: a["data"][0].pop("answers"), r"row 0 \(question_id 34602\): no 'answer' or 'answers'"),
        (lambda a: a["data"][0].pop("question_id"), r"row 0: no 'question_id'"),
        (
            lambda a: a.pop("data"),
            r"an answer file object needs a 'data' list \(TextVQA\), an 'annotations' list",
        ),
    ],
)
def test_answer_file_errors(tmp_path, change, message):
    spec = write_coin_textvqa(tmp_path)
    _edit(spec["answer_file"], change)
    with pytest.raises(ValueError, match=f"TextVQA_0.5.1_val.json:? {message}"):
        read_llava_json(spec["test_file"], spec["image_folder"], spec["answer_file"])


def test_caption_file_with_fewer_image_ids_than_questions(tmp_path):
    write_packs(tmp_path)
    caption = tmp_path / "UCIT/VizWiz/val_coco.json"
    _edit(caption, lambda c: c["images"].pop())  # the VizWiz file with 2,999 ids for 3,000 images
    with pytest.raises(
        ValueError, match=r"val_coco.json has 2 image ids for the 3 questions .* counts must match"
    ):
        read_llava_json(tmp_path / "UCIT/VizWiz/test.json", tmp_path / "UCIT/datasets", caption)


def test_recipe_labels_must_be_a_list_or_train(tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", [{**write_ucit_arxivqa(tmp_path), "labels": "letters"}])
    with pytest.raises(ValueError, match=r'labels must be a list of answer strings or "train"'):
        load_stream(recipe)


# --- cltune data check ---------------------------------------------------------------------------


def test_clean_packs_pass(tmp_path, capsys):
    code, out = _check(write_packs(tmp_path), capsys)
    assert code == 0, out
    assert "textvqa         task     test   3     3       3" in out
    assert "vizwiz-caption  general  test   3" in out
    assert "data check passed: 0 errors, 0 warnings" in out


def test_planted_duplicate_id_fails(tmp_path, capsys):
    recipe = write_packs(tmp_path)
    _edit(tmp_path / "UCIT/ArxivQA/test.json", lambda r: r[2].update(question_id="arxiv_test_0"))
    code, out = _check(recipe, capsys)
    assert code == 1
    assert (
        "arxivqa: task 'arxivqa' (test split): " in out
        and "id 'arxiv_test_0' repeats (record 0 has it too)" in out
    )
    assert "data check FAILED: 1 errors" in out


def test_missing_image_fails(tmp_path, capsys):
    recipe = write_packs(tmp_path)
    (tmp_path / "Ability_data/OCR_test/images/ocr_test_1.png").unlink()
    code, out = _check(recipe, capsys)
    assert code == 1
    assert "ocr: task 'ocr' (test split): " in out and "ocr_test_1.png' does not exist" in out


def test_train_test_duplicate_fails(tmp_path, capsys):
    recipe = write_packs(tmp_path)
    train = json.loads((tmp_path / "UCIT/ArxivQA/train.json").read_text())
    leaked = {"question_id": "leak", "image": train[1]["image"], "answer": "B"}
    leaked["text"] = train[1]["conversations"][0]["value"].replace("<image>\n", "")
    _edit(tmp_path / "UCIT/ArxivQA/test.json", lambda r: r.append(leaked))
    code, out = _check(recipe, capsys)
    assert code == 1
    assert (
        "arxivqa: 1 test rows are also rows of its own train split (same image bytes and question; e.g. test "
        "row 3 = train row 1)" in out
    )


def test_cross_task_leak_and_shared_images(tmp_path, capsys):
    arxiv, ocr = write_ucit_arxivqa(tmp_path), write_mllm_cl_ocr(tmp_path)
    image = (arxiv["image_folder"] / "ArxivQA/images/train_0.png").read_bytes()
    (ocr["test_image_folder"] / "images/ocr_test_0.png").write_bytes(image)  # same bytes, other question
    code, out = _check(write_recipe(tmp_path / "r.toml", [arxiv, ocr]), capsys)
    assert (
        code == 0
        and "ocr: 1 test images are also images of the train split of 'arxivqa' (other questions)" in out
    )
    question = json.loads(arxiv["train_file"].read_text())[0]["conversations"][0]["value"].replace(
        "<image>\n", ""
    )
    _edit(ocr["test_file"], lambda r: r[0].update(text=question))
    code, out = _check(write_recipe(tmp_path / "r.toml", [arxiv, ocr]), capsys)
    assert code == 1 and "ocr: 1 test rows are also rows of the train split of 'arxivqa'" in out


def test_answers_outside_the_label_set(tmp_path, capsys):
    arxiv = write_ucit_arxivqa(tmp_path)
    _edit(arxiv["test_file"], lambda r: r[1].update(answer="E"))
    code, out = _check(write_recipe(tmp_path / "r.toml", [arxiv]), capsys)
    assert code == 1 and "test split: 1 answers are outside the task's label set (e.g. row 1: 'E')" in out
    code, out = _check(write_recipe(tmp_path / "r.toml", [{**arxiv, "labels": "train"}]), capsys)
    assert code == 1 and "row 1: 'E'" in out
    _edit(arxiv["test_file"], lambda r: r[1].update(answer="B"))
    assert _check(write_recipe(tmp_path / "r.toml", [{**arxiv, "labels": "train"}]), capsys)[0] == 0


def test_unknown_recipe_is_a_usage_error(capsys):
    assert main(["data", "check", "no-such-stream"]) == 2
    assert "unknown stream" in capsys.readouterr().err
