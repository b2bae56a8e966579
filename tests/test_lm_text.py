"""Held-out real text (``lm_text``) and its teacher-forced next-token accuracy."""

from __future__ import annotations

import copy

import pytest
import torch

from cltune.data.encode import Encoder
from cltune.data.sources.lm_text import lm_text, prose_paragraphs
from cltune.data.task import Task
from cltune.evaluation.evaluator import evaluate
from cltune.evaluation.likelihood import token_accuracy
from cltune.strategies.config import TrainConfig
from cltune.strategies.template import Template


def test_pydoc_passages_are_prose_and_train_test_never_share_one():
    train, test = list(lm_text("train", None, 0)["answer"]), list(lm_text("test", None, 0)["answer"])
    assert len(train) > 50 and len(test) > 50
    assert not set(train) & set(test)
    assert all(200 <= len(p) <= 500 and p[0].isupper() and p.endswith(".") for p in train + test)
    assert list(lm_text("test", 12, 0)["answer"]) == list(lm_text("test", 12, 0)["answer"])
    assert list(lm_text("test", 12, 0)["answer"]) != list(lm_text("test", 12, 1)["answer"])


def test_prose_filter_drops_code_and_short_lines():
    sentence = "The statement evaluates each expression in turn and binds the result to the name. " * 3
    text = f"Title\n\n    x = 1\n    y = 2\n\n{sentence}\n\n{'a_b(c)[d] ' * 30}"
    assert prose_paragraphs(text) == [sentence.strip()]


def test_unknown_corpus_and_oversized_split_name_the_fix():
    with pytest.raises(ValueError, match="unknown corpus 'wiki'.*pydoc"):
        lm_text("test", 4, 0, corpus="wiki")
    with pytest.raises(ValueError, match="lower the size"):
        lm_text("test", 10_000, 0)


def _strategy(model, processor, batch: int) -> Template:
    return Template(model, Encoder(processor, "smol"), TrainConfig(eval_batch_size=batch), progress=False)


def _row_accuracy(strategy: Template, text: str) -> tuple[int, int]:
    ids = torch.tensor([strategy.encoder.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        predicted = strategy.model(input_ids=ids).logits[0, :-1].argmax(-1)
    return int((predicted == ids[0, 1:]).sum()), ids.shape[1] - 1


TASK = Task("text", lm_text("train", 4, 0), lm_text("test", 6, 0), metric="token_accuracy")


def test_token_accuracy_pools_tokens_and_ignores_padding(smol):
    """Batched and padded, the score equals the per-row count done by hand on the real SmolLM2."""
    counts = [_row_accuracy(_strategy(*smol, 1), t) for t in TASK.test["answer"]]
    expected = 100.0 * sum(c for c, _ in counts) / sum(n for _, n in counts)
    batched, predictions = token_accuracy(_strategy(*smol, 4), TASK, progress=False)
    assert 20.0 < batched < 100.0  # a pretrained LM predicts real prose well, not perfectly
    assert batched == pytest.approx(expected, abs=1e-9)
    assert len(predictions) == 6 and all(predictions)


def test_evaluate_scores_a_text_task_by_likelihood_and_sees_damage(smol):
    model, processor = smol
    strategy = _strategy(copy.deepcopy(model), processor, 8)
    before = evaluate(strategy, [TASK], progress=False)[0]
    assert before.metric == "token_accuracy"
    with torch.no_grad():
        for p in strategy.model.model.language_model.layers[0].parameters():
            p.mul_(-3.0)
    assert evaluate(strategy, [TASK], progress=False)[0].score < before.score - 10
