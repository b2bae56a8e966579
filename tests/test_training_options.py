"""Training options: learning-rate warm-up and schedules, bf16 autocast, gradient checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from cltune.models.scopes import set_trainable
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.strategies.template import Template


class Recorder(Plugin):
    """The learning rate of every update and the dtype of every forward's logits."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.dtypes: set[torch.dtype] = set()

    def before_update(self, strategy) -> None:
        self.lrs.append(strategy.optimizer.param_groups[0]["lr"])

    def after_forward(self, strategy) -> None:
        self.dtypes.add(strategy.mb_output.logits.dtype)


def train(tiny, task, **options) -> tuple[Template, Recorder]:
    model, processor = tiny
    from cltune.data.encode import Encoder

    config = TrainConfig(batch_size=4, lr=1e-2, **options)
    set_trainable(model, config.scope)
    recorder = Recorder()
    template = Template(model, Encoder(processor, "tiny"), config, [recorder], progress=False)
    template.train(Experience(1, [task]))
    return template, recorder


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]),  # warm-up over 2, then linear to 0 at 6
        ("cosine", [0.0, 0.5, *((1 + math.cos(math.pi * (k - 2) / 4)) / 2 for k in range(2, 6))]),
    ],
)
def test_each_update_uses_the_scheduled_learning_rate(tiny, default_stream, schedule, expected) -> None:
    _, recorder = train(tiny, default_stream.tasks[0], max_steps=6, warmup_steps=2, lr_schedule=schedule)
    assert recorder.lrs == pytest.approx([1e-2 * f for f in expected], abs=1e-9)


def test_bf16_autocast_and_checkpointing_train_close_to_fp32(tiny, default_stream) -> None:
    task = default_stream.tasks[0]
    before = {n: p.detach().clone() for n, p in tiny[0].named_parameters()}
    fp32, fp32_seen = train(tiny, task, max_steps=3)
    assert not fp32.model.is_activation_checkpointing
    delta32 = torch.cat([(p.detach() - before[n]).flatten() for n, p in fp32.model.named_parameters()])
    for n, p in fp32.model.named_parameters():  # same start for the bf16 run
        p.data.copy_(before[n])
    bf16, bf16_seen = train(tiny, task, max_steps=3, precision="bf16", gradient_checkpointing=True)
    delta16 = torch.cat([(p.detach() - before[n]).flatten() for n, p in bf16.model.named_parameters()])
    assert fp32_seen.dtypes == {torch.float32} and bf16_seen.dtypes == {torch.bfloat16}
    assert bf16.model.is_activation_checkpointing
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # weights stay fp32
    cosine = torch.nn.functional.cosine_similarity(delta32, delta16, dim=0)
    assert cosine > 0.9, f"bf16 updates point elsewhere than fp32's (cosine {cosine:.3f})"
    assert not torch.equal(delta32, delta16)  # autocast did change the arithmetic


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, "precision='fp16' is not supported .* use 'bf16'"),
        ({"precision": "int8"}, r"precision must be one of \('fp32', 'bf16'\)"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be true or false"),
    ],
)
def test_bad_training_options_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_a_model_without_checkpointing_support_is_a_clear_error(tiny) -> None:
    from cltune.strategies.template import enable_gradient_checkpointing

    with pytest.raises(ValueError, match="Linear does not support gradient checkpointing"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))
