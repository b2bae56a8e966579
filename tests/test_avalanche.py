"""Avalanche interop on the real tiny LLaVA: a cltune stream as an Avalanche benchmark, Avalanche's
Naive (with the HF overrides) trained through it to the same model and accuracy matrix as cltune's
``naive``, and Avalanche's own metric classes agreeing with cltune's summary metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from avalanche.evaluation.metrics import loss_metrics
from avalanche.training.plugins import EvaluationPlugin
from conftest import small_recipe_text
from safetensors.torch import load_file

from cltune.analysis import cl_metrics
from cltune.data.encode import IGNORE_INDEX, Encoder, collate
from cltune.data.recipe import build_stream
from cltune.experiment import RunSpec, run_experiment
from cltune.integrations.avalanche import HuggingFaceNaive, avalanche_metrics, run_naive, to_avalanche
from cltune.matrix import AccuracyMatrix
from cltune.models.loading import load_model
from cltune.strategies.config import TrainConfig

# Enough updates (two epochs, the second cut by max_steps) for the tasks to be learned and forgotten;
# fewer test rows per stream task than the small recipe's 16 keep the six evaluations short. The
# yes/no task comes first: the tiny model learns it in these few steps on every CPU tried (parity's
# three-token "odd" was not learnt at all on one, and a task never learnt cannot be forgotten).
TRAIN = {"lr": 5e-3, "batch_size": 8, "max_steps": 10}
RECIPE = small_recipe_text(("greater_than_4", "parity"), test_size=8)


@pytest.fixture(scope="module")
def spec(tmp_path_factory, tiny_cached) -> RunSpec:
    path = tmp_path_factory.mktemp("recipe") / "small.toml"
    path.write_text(RECIPE)
    return RunSpec.from_recipe(path, "naive", seed=0, **TRAIN)


@pytest.fixture(scope="module")
def stream(spec):
    return build_stream(spec.recipe)


@pytest.fixture(scope="module")
def cltune_run(spec, stream, tmp_path_factory):
    return run_experiment(spec, tmp_path_factory.mktemp("cltune"), stream=stream, progress=False)


@pytest.fixture(scope="module")
def avalanche_run(spec, stream):
    """(trained model, accuracy matrix) of Avalanche's Naive run through the bridge."""
    model, processor = load_model("tiny", pretrain_tasks=stream.general, seed=stream.seed)
    matrix = run_naive(stream, model, Encoder(processor, "tiny"), spec.train)
    return model, matrix


def test_benchmark_has_task_labelled_experiences_of_cltune_encoded_rows(tiny, stream) -> None:
    model, processor = tiny
    encoder = Encoder(processor, "tiny")
    benchmark = to_avalanche(stream, processor)
    for name, tasks, labels in (
        ("train", stream.tasks, [0, 1]),
        ("test", stream.tasks, [0, 1]),
        ("general", stream.general, [2]),
    ):
        experiences = list(benchmark.streams[name])
        assert [e.task.name for e in experiences] == [t.name for t in tasks]
        assert [e.task_label for e in experiences] == labels
        split = [t.train if name == "train" else t.test for t in tasks]
        assert [len(e.dataset) for e in experiences] == [len(s) for s in split]

    # A minibatch is cltune's encoding and padding of the same rows, plus the task labels.
    experience = benchmark.train_stream[1]
    data, task = experience.dataset, experience.task
    inputs, labels, task_labels = data.collate_fn([data[i] for i in range(4)])
    expected = collate([encoder.encode(task.train, i, task.name, True) for i in range(4)], encoder.pad_id)
    assert inputs.keys() == expected.keys() and "pixel_values" in inputs
    for key in expected:
        assert torch.equal(inputs[key], expected[key]), key
    assert labels is inputs["labels"] and task_labels.tolist() == [1] * 4
    answer = labels[0][labels[0] != IGNORE_INDEX]  # labels only on the answer (and end of turn)
    assert 0 < len(answer) < int(inputs["attention_mask"][0].sum())

    # Test experiences hold the test rows, not the train rows of the same index.
    test_item = benchmark.test_stream[1].dataset[0]
    fresh = Encoder(processor, "tiny").encode(task.test, 0, "fresh", True)
    assert torch.equal(test_item["input_ids"], fresh["input_ids"])
    assert test_item["targets_task_labels"] == 1


def test_avalanche_eval_loop_and_loss_metric_run_on_dict_minibatches(tiny, stream) -> None:
    model, processor = tiny
    encoder = Encoder(processor, "tiny")
    config = TrainConfig(eval_batch_size=64)  # one minibatch per experience
    evaluator = EvaluationPlugin(loss_metrics(experience=True), loggers=[])
    strategy = HuggingFaceNaive(model=model, config=config, evaluator=evaluator)
    benchmark = to_avalanche(stream, encoder)
    results = strategy.eval(benchmark.test_stream)
    for experience in benchmark.test_stream:
        task = experience.task
        features = [encoder.encode(task.test, i, task.name, True) for i in range(len(task.test))]
        with torch.no_grad():
            expected = model(**collate(features, encoder.pad_id)).loss.item()
        label, index = experience.task_label, experience.current_experience
        key = f"Loss_Exp/eval_phase/test_stream/Task{label:03d}/Exp{index:03d}"
        assert math.isfinite(results[key]) and results[key] == pytest.approx(expected, rel=1e-5)


def test_grad_accum_is_refused_by_the_bridge(tiny) -> None:
    with pytest.raises(ValueError, match="grad_accum=2"):
        HuggingFaceNaive(model=tiny[0], config=TrainConfig(grad_accum=2))


def test_avalanche_naive_gives_cltune_naives_model_and_matrix(cltune_run, avalanche_run) -> None:
    """Same data, model, seed and options: Avalanche's loop with the bridge's overrides (fresh
    AdamW per experience, cltune's per-experience seed and shuffling generator, clipping, the
    ``max_steps`` cut in the second epoch) reproduces cltune's ``naive`` bit for bit on the CPU."""
    model, matrix = avalanche_run
    theirs = cltune_run.matrix
    assert matrix.stages == theirs.stages and matrix.columns == theirs.columns
    np.testing.assert_array_equal(matrix.values, theirs.values)
    assert not np.array_equal(matrix.values[1], matrix.values[0])  # training changed the answers
    assert not np.array_equal(matrix.values[2], matrix.values[1])
    checkpoint = next(cltune_run.run_dir.glob("checkpoint-*")) / "params.safetensors"
    trained = load_file(str(checkpoint))
    own = dict(model.named_parameters())
    assert len(trained) > 10
    for name, value in trained.items():
        assert torch.equal(own[name].detach().cpu(), value), name


def test_avalanche_metric_classes_agree_with_cltune_metrics(cltune_run, avalanche_run) -> None:
    ours = cltune_run.metrics
    theirs = avalanche_metrics(avalanche_run[1])
    assert ours["forgetting_avalanche"] > 0  # the run forgets, so the check is not 0 == 0
    for name in ("forgetting_avalanche", "bwt", "fwt"):
        assert theirs[name] == pytest.approx(ours[name], abs=1e-9), name
    assert theirs["forgetting_functional"] == pytest.approx(ours["forgetting_avalanche"], abs=1e-9)


def test_avalanche_metrics_on_a_hand_made_matrix() -> None:
    values = [
        [10, 20, 30, 50],  # zero-shot
        [80, 25, 35, 40],
        [60, 70, 45, 30],
        [50, 65, 90, 20],
    ]
    matrix = AccuracyMatrix(values=np.array(values, dtype=float), tasks=["a", "b", "c"], general=["g"])
    got = avalanche_metrics(matrix)
    assert got["forgetting_avalanche"] == pytest.approx(((80 - 50) + (70 - 65)) / 2)
    assert got["bwt"] == pytest.approx(-got["forgetting_avalanche"])
    assert got["fwt"] == pytest.approx(((25 - 20) + (45 - 30)) / 2)
    expected = cl_metrics(matrix)
    for name in ("forgetting_avalanche", "bwt", "fwt"):
        assert got[name] == pytest.approx(expected[name]), name
    single = AccuracyMatrix(values=np.array(values[:2], dtype=float)[:, [0, 3]], tasks=["a"], general=["g"])
    assert set(avalanche_metrics(single).values()) == {None}
