"""ratio="auto": the knee of each tensor's Lorenz curve, checked by hand and by brute force."""

from __future__ import annotations

import pytest
import torch

from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.selective.auto_ratio import auto_ratio
from cltune.selective.importance import gradient
from cltune.strategies.calibration import experience_batches
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template


def test_fraction_above_each_tensors_mean_by_hand():
    # [1, 2, 3, 10]: mean 4, one entry above; a constant tensor cannot be ranked and counts in full
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 10.0]), "b": torch.tensor([5.0, 5.0])}
    assert auto_ratio(scores) == pytest.approx((1 + 2) / 6)


def test_each_tensor_is_judged_on_its_own_scale():
    small = torch.tensor([1.0, 1.0, 1.0, 9.0])
    # pooled, the mean (151.5) would keep one entry of 8; per tensor, one of each four
    assert auto_ratio({"a": small, "b": 100 * small}) == pytest.approx(2 / 8)
    assert auto_ratio({"a": small}) == auto_ratio({"a": 7 * small})


def test_the_ratio_is_where_the_lorenz_curve_is_farthest_from_equality():
    scores = torch.distributions.Exponential(1.0).sample((1000,)) ** 2  # heavy-tailed, no ties
    ranked = scores.sort(descending=True).values
    x = torch.arange(1, 1001) / 1000
    gap = ranked.cumsum(0) / ranked.sum() - x  # L(x) − x at x = k/n
    assert auto_ratio({"w": scores}) == pytest.approx(float(x[gap.argmax()]), abs=1e-3)


def test_empty_or_nan_scores_are_refused():
    with pytest.raises(ValueError, match="at least one importance tensor"):
        auto_ratio({})
    with pytest.raises(ValueError, match="'w' contain NaN"):
        auto_ratio({"w": torch.tensor([1.0, float("nan")])})


def test_gmt_auto_uses_and_records_the_ratio_of_its_gradient_importance(tiny, default_stream, tmp_path):
    model, processor = tiny
    preset = build_preset("gmt", ratio="auto")
    model = preset.prepare(model, "language_model")
    config = TrainConfig(batch_size=8, max_steps=1, lr=1e-3)
    template = Template(model, Encoder(processor), config, preset.plugins, progress=False)
    source = default_stream.tasks[0]
    experience = Experience(1, [Task(source.name, source.train.select(range(16)), source.test)])
    template.experience = experience
    batches = experience_batches(template, None, "gmt")
    expected = auto_ratio(gradient(model, template.trainable_parameters(), batches, dtype=torch.bfloat16))
    template.train(experience)
    stats = template.extra_results["masks"][source.name]
    assert stats["ratio"] == expected
    assert 0.0 < expected < 0.5 and stats["density"] == pytest.approx(expected, abs=1e-3)
