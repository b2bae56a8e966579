"""Tiny copies of the benchmark packs' on-disk layouts, written into a folder for the tests.

- UCIT (MCITlib ``configs/data_configs/UCIT/*.json``): ``UCIT/<Task>/train.json`` (conversations),
  ``UCIT/<Task>/test.json`` (question records), images relative to ``UCIT/datasets``; the captioning
  tasks' references in a COCO caption file.
- CoIN (``scripts/LLaVA/Eval/*.sh``): ``playground/Instructions_Original/<Task>/{train,val}.json``,
  images relative to ``cl_dataset``, TextVQA's answers in ``cl_dataset/TextVQA/TextVQA_0.5.1_val.json``.
- MLLM-CL ability (its README): ``Ability_data/OCR/{images,train.json}`` and
  ``Ability_data/OCR_test/{images,test.json}``, each split with its own image folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

LETTERS = "ABCD"


def _png(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), ((37 * n) % 256, (91 * n) % 256, (53 * n + 17) % 256)).save(path)


def _conversation(rid: str, image: str, question: str, answer: str) -> dict:
    turns = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]
    return {"id": rid, "image": image, "conversations": turns}


def _dump(path: Path, records: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    return path


def write_ucit_arxivqa(root: Path, first_image: int = 0) -> dict:
    """ArxivQA: multiple-choice questions answered with a letter."""
    images = root / "UCIT" / "datasets"
    options = "\nA. a bar chart\nB. a line plot\nC. a scatter plot\nD. a table"
    prompt = "Answer with the option's letter from the given choices directly."
    train, test = [], []
    for n in range(4):
        rel = f"ArxivQA/images/train_{n}.png"
        _png(images / rel, first_image + n)
        train.append(
            _conversation(
                f"arxiv_{n}", rel, f"Which figure type is shown in panel {n}?{options}\n{prompt}", LETTERS[n]
            )
        )
    for n in range(3):
        rel = f"ArxivQA/images/test_{n}.png"
        _png(images / rel, first_image + 10 + n)
        test.append(
            {
                "question_id": f"arxiv_test_{n}",
                "image": rel,
                "text": f"What does figure {n} show?{options}\n{prompt}",
                "answer": LETTERS[n],
            }
        )
    return {
        "name": "arxivqa",
        "train_file": _dump(root / "UCIT" / "ArxivQA" / "train.json", train),
        "test_file": _dump(root / "UCIT" / "ArxivQA" / "test.json", test),
        "image_folder": images,
        "labels": list(LETTERS),
    }


def write_ucit_vizwiz_caption(root: Path) -> dict:
    """VizWiz-caption: question records without answers, references in a COCO caption file."""
    images = root / "UCIT" / "datasets"
    captions = [["a blue mug on a desk", "a mug"], ["a can of beans", "a food can"], ["a remote control"]]
    train, test = [], []
    for n in range(3):
        rel = f"VizWiz/train/VizWiz_train_{n:08d}.png"
        _png(images / rel, 40 + n)
        train.append(_conversation(f"vizwiz_{n}", rel, "Describe the image in one sentence.", captions[n][0]))
    coco = {"images": [], "annotations": []}
    for n, refs in enumerate(captions, start=1):
        rel = f"VizWiz/val/VizWiz_val_{n:08d}.png"
        _png(images / rel, 50 + n)
        test.append(
            {
                "question_id": f"VizWiz_val_{n:08d}",
                "image": rel,
                "text": "Describe the image in one sentence.",
            }
        )
        coco["images"].append({"id": n, "file_name": Path(rel).name})
        coco["annotations"] += [{"image_id": n, "id": 10 * n + k, "caption": c} for k, c in enumerate(refs)]
    return {
        "name": "vizwiz-caption",
        "train_file": _dump(root / "UCIT" / "VizWiz" / "train.json", train),
        "test_file": _dump(root / "UCIT" / "VizWiz" / "test.json", test),
        "image_folder": images,
        "answer_file": _dump(root / "UCIT" / "VizWiz" / "val_coco.json", coco),
    }


def write_coin_textvqa(root: Path) -> dict:
    """TextVQA: ten annotator answers per question in the official TextVQA answer file."""
    images = root / "cl_dataset"
    words = ["stop", "exit", "open", "sale"]
    train, test, data = [], [], []
    for n in range(4):
        rel = f"TextVQA/train_images/{n:016x}.png"
        _png(images / rel, 60 + n)
        train.append(
            _conversation(
                str(1000 + n),
                rel,
                "What word is on the sign?\nAnswer the question using a single word or phrase.",
                words[n],
            )
        )
    for n in range(3):
        rel = f"TextVQA/train_images/val_{n:012x}.png"
        _png(images / rel, 70 + n)
        qid = 34602 + n
        test.append(
            {
                "question_id": qid,
                "image": rel,
                "text": f"what is written on sign {n}?\nAnswer the question using a single word or phrase.",
            }
        )
        data.append({"question_id": qid, "answers": [words[n]] * 7 + ["sign"] * 3})
    folder = root / "playground" / "Instructions_Original" / "TextVQA"
    return {
        "name": "textvqa",
        "train_file": _dump(folder / "train.json", train),
        "test_file": _dump(folder / "val.json", test),
        "image_folder": images,
        "answer_file": _dump(
            images / "TextVQA" / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data}
        ),
    }


def write_mllm_cl_ocr(root: Path) -> dict:
    """MLLM-CL ability OCR: train and test in separate folders, each with its own images."""
    data = root / "Ability_data"
    train, test = [], []
    for n in range(3):
        _png(data / "OCR" / "images" / f"ocr_{n}.png", 80 + n)
        train.append(
            _conversation(f"ocr_{n}", f"images/ocr_{n}.png", "What is the text in the image?", f"word{n}")
        )
        _png(data / "OCR_test" / "images" / f"ocr_test_{n}.png", 90 + n)
        test.append(
            {
                "question_id": n,
                "image": f"images/ocr_test_{n}.png",
                "text": "What is the text in the image?",
                "answer": f"text{n}",
                "answer_type": "ocr",
            }
        )
    return {
        "name": "ocr",
        "train_file": _dump(data / "OCR" / "train.json", train),
        "test_file": _dump(data / "OCR_test" / "test.json", test),
        "image_folder": data / "OCR",
        "test_image_folder": data / "OCR_test",
    }


def write_recipe(path: Path, tasks: list[dict], general: list[dict] = ()) -> Path:
    """A recipe of ``llava_json`` tasks from the writers' option dicts."""
    lines = ['name = "packs"']
    for section, entries in (("tasks", tasks), ("general", general)):
        for entry in entries:
            lines += [f"[[{section}]]", 'source = "llava_json"']
            lines += [f"{k} = {json.dumps(v if isinstance(v, list) else str(v))}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_packs(root: Path) -> Path:
    """One clean recipe over a task of each layout (the captioning task as a general task)."""
    tasks = [write_ucit_arxivqa(root), write_coin_textvqa(root), write_mllm_cl_ocr(root)]
    return write_recipe(root / "packs.toml", tasks, [write_ucit_vizwiz_caption(root)])
