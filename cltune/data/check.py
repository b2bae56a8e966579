"""Data hygiene of a stream recipe (``cltune data check``): counts, load errors, leakage, label sets.

Errors make a run's numbers wrong or impossible: a task that does not load (missing image, malformed
conversation, duplicate or missing id, an answer file that does not fit its questions), a test row
that is also a train row of its own task or of any trained task (the same image bytes and question;
for text-only tasks the same question), an answer outside the task's label set. Warnings are worth a
look but common in published data: a test image that is also a train image with another question,
a row repeated within one split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from cltune.data.recipe import SIZE_KEYS, build_task, read_recipe
from cltune.data.task import Task

RowKey = tuple[str | None, str]  # (sha256 of the image bytes or None, normalised question)
_WHAT = "image bytes and question"


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    task: str
    message: str


@dataclass(frozen=True)
class SplitCount:
    task: str
    role: str  # "task" (trained on) or "general"
    split: str
    rows: int
    images: int  # distinct image files, by their bytes
    questions: int  # distinct questions


@dataclass
class DataCheck:
    """What :func:`check_recipe` found: one count per loaded split, and the findings."""

    stream: str
    counts: list[SplitCount] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]


@dataclass
class _Split:
    keys: list[RowKey]
    answers: list[str]
    choices: list[list[str]] | None


def check_recipe(recipe: str | Path | None, all_rows: bool = False) -> DataCheck:
    """Load every task of ``recipe`` (at the recipe's sizes, or every row with ``all_rows``) and check it."""
    resolved = read_recipe(recipe)
    report = DataCheck(resolved["name"])
    loaded: dict[str, dict[str, _Split]] = {}
    trained: list[str] = []
    for role, section in (("task", "tasks"), ("general", "general")):
        for spec in resolved[section]:
            if all_rows:
                spec = {k: v for k, v in spec.items() if k not in SIZE_KEYS}
            try:
                task = build_task(spec, resolved["seed"])
            except (ValueError, OSError) as err:
                report.findings.append(Finding("error", spec["name"], str(err)))
                continue
            loaded[task.name] = _task_splits(task, role, report)
            report.findings += _label_findings(task.name, loaded[task.name], spec.get("labels"))
            if role == "task":
                trained.append(task.name)
    report.findings += _leak_findings(loaded, trained)
    return report


def _task_splits(task: Task, role: str, report: DataCheck) -> dict[str, _Split]:
    splits = {}
    for name, split in (("train", task.train), ("test", task.test)):
        keys = list(zip(_image_digests(split), (_normalise(q) for q in split["question"]), strict=True))
        choices = split["choices"] if "choices" in split.column_names else None
        splits[name] = _Split(keys, list(split["answer"]), choices)
        images = {digest for digest, _ in keys if digest is not None}
        report.counts.append(
            SplitCount(task.name, role, name, len(keys), len(images), len({q for _, q in keys}))
        )
        repeated = len(keys) - len(set(keys))
        if repeated:
            report.findings.append(
                Finding(
                    "warning", task.name, f"{name} split: {repeated} rows repeat an earlier row's {_WHAT}"
                )
            )
    return splits


def _image_digests(split: datasets.Dataset) -> list[str | None]:
    """The sha256 of each row's image file bytes (None for a row without an image)."""
    if "image" not in split.column_names:
        return [None] * len(split)
    raw = split.cast_column("image", datasets.Image(decode=False))["image"]
    return [
        None if item is None else hashlib.sha256(item["bytes"] or Path(item["path"]).read_bytes()).hexdigest()
        for item in raw
    ]


def _normalise(question: str) -> str:
    return " ".join(question.split()).casefold()


def _leak_findings(loaded: dict[str, dict[str, _Split]], trained: list[str]) -> list[Finding]:
    """Test rows of any task that are train rows of a trained task (errors) or share its images (warnings)."""
    findings = []
    for source in trained:
        train_rows = {key: i for i, key in reversed(list(enumerate(loaded[source]["train"].keys)))}
        train_images = {digest for digest, _ in train_rows if digest is not None}
        for name, splits in loaded.items():
            test = splits["test"].keys
            same = [(i, train_rows[key]) for i, key in enumerate(test) if key in train_rows]
            where = "its own train split" if name == source else f"the train split of {source!r}"
            if same:
                i, j = same[0]
                findings.append(
                    Finding(
                        "error",
                        name,
                        f"{len(same)} test rows are also rows of {where} (same {_WHAT}; e.g. test row {i} "
                        f"= train row {j}); remove them from one of the splits",
                    )
                )
            shared = {i for i, (digest, _) in enumerate(test) if digest in train_images} - {
                i for i, _ in same
            }
            if shared:
                findings.append(
                    Finding(
                        "warning",
                        name,
                        f"{len(shared)} test images are also images of {where} (other questions)",
                    )
                )
    return findings


def _label_findings(name: str, splits: dict[str, _Split], labels: Any) -> list[Finding]:
    """Answers outside the task's label set: the recipe's ``labels`` list, the train answers
    (``labels = "train"``), or a row's own ``choices`` (an answer is a choice or its letter)."""
    findings = []
    for split_name, split in splits.items():
        if labels == "train" and split_name == "train":
            continue
        allowed = set(splits["train"].answers) if labels == "train" else set(labels or ())
        outside = []
        for i, answer in enumerate(split.answers):
            row_set = set(allowed)
            if split.choices is not None and split.choices[i]:
                row_set |= {*split.choices[i], *(chr(65 + k) for k in range(len(split.choices[i])))}
            if row_set and answer not in row_set:
                outside.append(i)
        if outside:
            first = split.answers[outside[0]]
            findings.append(
                Finding(
                    "error",
                    name,
                    f"{split_name} split: {len(outside)} answers are outside the task's label set (e.g. "
                    f"row {outside[0]}: {first!r}); fix the answers or the recipe's labels",
                )
            )
    return findings
