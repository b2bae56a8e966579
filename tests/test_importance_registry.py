"""One registry of importance measures: a measure registered from outside the package (this file) is
usable by importance-mask and importance maps, and their error messages list it."""

from __future__ import annotations

import pytest
import torch

from cltune.analysis.importance_map import importance_map
from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.rundir import RunDirectory
from cltune.selective import IMPORTANCE_MEASURES, load_masks, register_importance, topk_masks
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template

NAME = "test-smallest-weights"
SEEN: list[int] = []  # batches each call of the measure received


def smallest_weights(model, params, batches, *, dtype=None):
    """I = −|θ|: the smallest weights score highest; counts the batches it is given."""
    SEEN.append(sum(1 for _ in batches))
    return {name: -p.detach().abs().to(dtype or torch.float32) for name, p in params.items()}


@pytest.fixture
def registered():
    register_importance(NAME)(smallest_weights)
    register_importance("test-needs-reference", reference=True)(smallest_weights)
    SEEN.clear()
    yield NAME
    del IMPORTANCE_MEASURES[NAME], IMPORTANCE_MEASURES["test-needs-reference"]


def test_error_messages_list_a_registered_measure(registered):
    with pytest.raises(ValueError, match=rf"unknown importance-mask importance measure 'nope'\..*{NAME}"):
        build_preset("importance-mask", importance="nope")
    with pytest.raises(
        ValueError, match=rf"'si' cannot choose a mask before training .it is tracked.*{NAME}"
    ):
        build_preset("importance-mask", importance="si")
    reference = r"'test-needs-reference' cannot choose a mask before training .it needs a reference θ"
    with pytest.raises(ValueError, match=reference):
        build_preset("importance-mask", importance="test-needs-reference")
    with pytest.raises(ValueError, match=rf"unknown importance measure 'nope'\..*{NAME}"):
        importance_map(None, [], "nope")
    with pytest.raises(ValueError, match=rf"'si' is tracked during training.*use one of .*{NAME}"):
        importance_map(None, [], "si")
    with pytest.raises(ValueError, match=f"{NAME!r} is already registered"):
        register_importance(NAME)(smallest_weights)


def test_a_registered_measure_chooses_the_masks_and_fills_a_map(registered, tiny, default_stream, tmp_path):
    model, processor = tiny
    preset = build_preset("importance-mask", importance=NAME, ratio=0.1, calibration_batches=2)
    model = preset.prepare(model, "language_model")
    config = TrainConfig(batch_size=4, max_steps=2, lr=1e-3, weight_decay=0.0)
    template = Template(model, Encoder(processor), config, preset.plugins, progress=False)
    template.run_dir = RunDirectory(tmp_path)
    task = default_stream.tasks[0]
    params = template.trainable_parameters()
    before = {name: p.detach().clone() for name, p in params.items()}
    expected = topk_masks({n: -b.abs().to(torch.bfloat16) for n, b in before.items()}, 0.1)
    template.train(Experience(1, [Task(task.name, task.train.select(range(16)), task.test, task.metric)]))
    assert SEEN == [2]  # the experience's calibration batches reached the measure
    masks = load_masks(tmp_path / "analysis" / f"masks-{task.name}.safetensors")
    assert set(masks) == set(params)
    for name, p in params.items():
        assert torch.equal(masks[name], expected[name].cpu()), name
        assert not bool(((p.detach() != before[name]) & ~masks[name]).any()), name  # outside: unchanged

    batches = list(template.calibration_batches(3, "map"))
    imap = importance_map(template.model, batches, NAME, params=params, info={"task": task.name})
    assert SEEN[-1] == 3 and imap.method == NAME
    for name, p in params.items():
        assert torch.equal(imap.scores[name], -p.detach().abs().cpu()), name
