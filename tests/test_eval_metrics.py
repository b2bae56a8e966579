"""Answer scoring: normalisation and each task metric on hand-checkable cases."""

import pytest

from cltune.evaluation.metrics import (
    anls,
    choice_accuracy,
    exact_match,
    get_metric,
    normalize_answer,
    rouge_l,
    vqa_accuracy,
)


def test_normalisation_follows_vqa_conventions():
    assert normalize_answer("  The Red Circle. ") == "red circle"
    assert normalize_answer("Two") == "2"
    assert exact_match("A triangle!", "triangle") == 1.0
    assert exact_match("triangles", "triangle") == 0.0


def test_vqa_soft_accuracy_counts_annotators():
    answers = ["red"] * 2 + ["blue"] * 8
    # each leave-one-out subset of 9: 'red' appears 2 times (8 subsets) or 1 time (2 subsets)
    assert vqa_accuracy("red", "blue", answers=answers) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    assert vqa_accuracy("blue", "blue", answers=answers) == 1.0
    assert vqa_accuracy("blue", "blue") == 1.0 and vqa_accuracy("red", "blue") == 0.0


def test_choice_accuracy_takes_text_or_letter():
    choices = ["cat", "dog", "ship"]
    assert choice_accuracy("B", "dog", choices=choices) == 1.0
    assert choice_accuracy("b.", "dog", choices=choices) == 1.0
    assert choice_accuracy("The dog", "dog", choices=choices) == 1.0
    assert choice_accuracy("A", "dog", choices=choices) == 0.0
    assert choice_accuracy("horse", "dog", choices=choices) == 0.0


def test_anls_and_rouge_l():
    assert anls("hello", "hello") == 1.0
    assert anls("hellp", "hello") == pytest.approx(0.8)
    assert anls("xyz", "hello") == 0.0
    assert rouge_l("the cat sat", "cat sat down") == pytest.approx(
        (1 + 1.2**2) * 1.0 * (2 / 3) / (2 / 3 + 1.2**2 * 1.0)
    )
    assert rouge_l("", "cat") == 0.0


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown task metric 'exact'.*exact_match"):
        get_metric("exact")
