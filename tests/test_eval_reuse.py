"""Evaluation reuse: a task is generated again exactly when what determines its answers changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cltune.adapters.bank import lora_layers
from cltune.data.encode import Encoder
from cltune.data.recipe import build_stream, read_recipe
from cltune.evaluation.evaluator import evaluate
from cltune.evaluation.reuse import EvalReuse, TensorDigests, answer_fingerprint
from cltune.experiment import RunSpec, run_experiment
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template


def run(recipe: Path, strategy: str, out: Path, reuse: bool) -> tuple[dict, dict]:
    result = run_experiment(
        RunSpec.from_recipe(recipe, strategy), out, progress=False, reuse_evaluations=reuse
    )
    predictions = {p.name: json.loads(p.read_text()) for p in (result.run_dir / "predictions").iterdir()}
    return result.results, predictions


@pytest.mark.usefixtures("tiny_cached")
def test_lora_isolation_matrix_is_identical_with_fewer_generations(
    small_recipe: Path, tmp_path: Path
) -> None:
    with_reuse, predictions = run(small_recipe, "lora-isolation", tmp_path / "reuse", reuse=True)
    without, plain_predictions = run(small_recipe, "lora-isolation", tmp_path / "plain", reuse=False)
    assert with_reuse["matrix"] == without["matrix"]
    assert predictions == plain_predictions
    assert "evaluations" not in without["extra"]
    # Stage 1 wraps the model in PEFT (new module types: everything is generated); at stage 2 only
    # greater_than_4's adapter changed: parity keeps its adapter, the general task the bare base.
    assert with_reuse["extra"]["evaluations"] == {
        "computed": 4,
        "reused": 2,
        "reused_by_stage": {"2": ["parity", "digit"]},
    }


@pytest.mark.usefixtures("tiny_cached")
def test_naive_never_reuses(small_recipe: Path, tmp_path: Path) -> None:
    results, _ = run(small_recipe, "naive", tmp_path, reuse=True)
    assert results["extra"]["evaluations"] == {"computed": 6, "reused": 0, "reused_by_stage": {}}


@pytest.fixture
def isolation(tiny, small_recipe: Path):
    """A lora-isolation template trained on both tasks of the small stream, and the eval tasks."""
    model, processor = tiny
    stream = build_stream(read_recipe(small_recipe))
    preset = build_preset("lora-isolation")
    model = preset.prepare(model, "language_model")
    spec = RunSpec.from_recipe(small_recipe, "lora-isolation")
    strategy = Template(model, Encoder(processor), spec.train, preset.plugins, progress=False)
    for index, task in enumerate(stream.tasks, start=1):
        strategy.train(Experience(index, [task]))
    return strategy, [*stream.tasks, *stream.general]


def first_lora_b(strategy: Template, adapter: str) -> torch.Tensor:
    layers = lora_layers(strategy.model)
    return next(layer.lora_B[adapter].weight for layer in layers if adapter in layer.lora_B)


def test_a_changed_weight_forces_exactly_the_tasks_that_use_it(isolation) -> None:
    strategy, tasks = isolation
    reuse = EvalReuse()
    evaluate(strategy, tasks, progress=False, reuse=reuse)
    evaluate(strategy, tasks, progress=False, reuse=reuse)
    assert (reuse.computed, reuse.reused) == (3, 3)

    with torch.no_grad():  # one entry of parity's adapter: parity only
        first_lora_b(strategy, "parity")[0, 0] += 1e-3
    scores = evaluate(strategy, tasks, progress=False, reuse=reuse)
    assert (reuse.computed, reuse.reused) == (4, 5)
    assert reuse.reused_by_stage["2"][-2:] == ["greater_than_4", "digit"]

    with torch.no_grad():  # one entry of a base weight every task runs through: all of them
        strategy.model.get_base_model().lm_head.weight[0, 0] += 1e-3
    scores = evaluate(strategy, tasks, progress=False, reuse=reuse)
    assert (reuse.computed, reuse.reused) == (7, 5)
    fresh = evaluate(strategy, tasks, progress=False)
    assert [s.predictions for s in scores] == [s.predictions for s in fresh]


def test_fingerprint_ignores_adapters_the_task_does_not_use(isolation) -> None:
    strategy, tasks = isolation
    parity, greater = tasks[0], tasks[1]

    def fingerprint(task) -> str | None:
        strategy.eval_task = task
        strategy.call("before_eval_exp")
        return answer_fingerprint(strategy, task)

    before = fingerprint(parity), fingerprint(greater)
    with torch.no_grad():
        first_lora_b(strategy, "greater_than_4")[0, 0] += 1e-3
    after = fingerprint(parity), fingerprint(greater)
    assert None not in before
    assert after[0] == before[0] and after[1] != before[1]


class Temperature(Plugin):
    """Answers depend on a setting outside the weights, declared through ``eval_fingerprint``."""

    def __init__(self) -> None:
        self.value = 1.0

    def eval_fingerprint(self, strategy, task) -> str:
        return f"temperature={self.value}"


def test_a_plugins_declared_eval_state_enters_the_fingerprint(isolation) -> None:
    strategy, tasks = isolation
    parity = tasks[0]
    strategy.eval_task = parity
    strategy.call("before_eval_exp")
    plain = answer_fingerprint(strategy, parity)
    strategy.plugins.append(Plugin())  # the neutral defaults: nothing added
    assert answer_fingerprint(strategy, parity) == plain
    temperature = Temperature()
    strategy.plugins.append(temperature)
    first = answer_fingerprint(strategy, parity)
    temperature.value = 0.5
    assert None not in (plain, first) and len({plain, first, answer_fingerprint(strategy, parity)}) == 3


def test_a_pass_hashes_each_tensor_once_and_sees_in_place_changes(isolation) -> None:
    strategy, tasks = isolation
    reuse = EvalReuse()
    evaluate(strategy, tasks, progress=False, reuse=reuse)
    named = dict(strategy.model.named_parameters()) | dict(strategy.model.named_buffers())
    assert 0 < reuse.tensors.hashed == len(reuse.tensors.seen) <= len(named)  # each tensor once

    parity, weight = tasks[0], strategy.model.get_base_model().lm_head.weight
    strategy.eval_task = parity
    strategy.call("before_eval_exp")
    digests = TensorDigests()
    before = answer_fingerprint(strategy, parity, digests)
    with torch.no_grad():  # in place: bumps the version counter, so the pass's memo sees it
        weight[0, 0] += 1e-3
    changed = answer_fingerprint(strategy, parity, digests)
    assert changed != before and changed == answer_fingerprint(strategy, parity)
    hashed = digests.hashed
    assert answer_fingerprint(strategy, parity, digests) == changed and digests.hashed == hashed

    weight.data[0, 0] += 1e-3  # bypasses the counter: only a new pass sees it
    assert answer_fingerprint(strategy, parity, digests) == changed != answer_fingerprint(strategy, parity)
    computed = reuse.computed
    evaluate(strategy, tasks, progress=False, reuse=reuse)
    assert reuse.computed == computed + len(tasks)  # lm_head is used by every task


def test_an_unknown_forward_hook_disables_reuse(isolation) -> None:
    strategy, tasks = isolation
    handle = strategy.model.get_base_model().lm_head.register_forward_hook(lambda *args: None)
    try:
        reuse = EvalReuse()
        evaluate(strategy, tasks, progress=False, reuse=reuse)
        evaluate(strategy, tasks, progress=False, reuse=reuse)
        assert (reuse.computed, reuse.reused) == (6, 0)
    finally:
        handle.remove()
