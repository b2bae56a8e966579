"""ratio="auto": the effective fraction of entries carrying the importance (Kish), by hand."""

from __future__ import annotations

import pytest
import torch

from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.selective.auto_ratio import auto_ratio
from cltune.selective.importance import gradient
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template


def test_importance_spread_evenly_over_k_entries_gives_k_over_n():
    assert auto_ratio({"w": torch.tensor([3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])}) == pytest.approx(2 / 8)
    assert auto_ratio({"w": torch.full((5,), 0.7)}) == pytest.approx(1.0)  # flat: nothing stands out
    assert auto_ratio({"w": torch.zeros(4)}) == 1.0  # no preference at all


def test_the_ratio_is_kish_effective_sample_size_over_the_whole_scope():
    # (Σ I)² / (N Σ I²) pooled: (1 + 2 + 1)² / (6 · (1 + 4 + 1)) = 16 / 36
    scores = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    assert auto_ratio(scores) == pytest.approx(16 / 36)
    assert auto_ratio({k: 5 * v for k, v in scores.items()}) == pytest.approx(16 / 36)  # scale-free
    x = torch.distributions.Exponential(1.0).sample((10_000,)) ** 2
    cv2 = float(x.double().var(correction=0) / x.double().mean() ** 2)
    assert auto_ratio({"w": x}) == pytest.approx(1 / (1 + cv2), rel=1e-9)  # = 1 / (1 + CV²)


def test_empty_nan_or_negative_scores_are_refused():
    with pytest.raises(ValueError, match="at least one importance tensor"):
        auto_ratio({})
    with pytest.raises(ValueError, match="'w' contain NaN"):
        auto_ratio({"w": torch.tensor([1.0, float("nan")])})
    with pytest.raises(ValueError, match="'w' are negative"):
        auto_ratio({"w": torch.tensor([1.0, -1.0])})


def test_gmt_auto_uses_and_records_the_ratio_of_its_gradient_importance(tiny, default_stream, tmp_path):
    model, processor = tiny
    preset = build_preset("gmt", ratio="auto")
    model = preset.prepare(model, "language_model")
    config = TrainConfig(batch_size=8, max_steps=1, lr=1e-3)
    template = Template(model, Encoder(processor), config, preset.plugins, progress=False)
    source = default_stream.tasks[0]
    experience = Experience(1, [Task(source.name, source.train.select(range(16)), source.test)])
    template.experience = experience
    batches = template.calibration_batches(None, "gmt")
    expected = auto_ratio(gradient(model, template.trainable_parameters(), batches, dtype=torch.bfloat16))
    template.train(experience)
    stats = template.extra_results["masks"][source.name]
    assert stats["ratio"] == expected
    assert 0.0 < expected < 0.5 and stats["density"] == pytest.approx(expected, abs=1e-3)
