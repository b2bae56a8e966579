"""The training template: hook order, step counting, scopes, replay mixing, non-finite losses."""

from __future__ import annotations

import pytest
import torch

from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.models.scopes import scope_parameters
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import HOOKS, TRAINING_HOOKS, Plugin
from cltune.strategies.registry import build_preset
from cltune.strategies.template import NonFiniteLoss, Template


class Recorder(Plugin):
    def __init__(self):
        self.calls: list[str] = []
        self.batch_sizes: list[int] = []


for _hook in HOOKS:

    def _record(self, strategy, _hook=_hook):
        self.calls.append(_hook)
        if _hook == "before_forward":
            self.batch_sizes.append(strategy.mbatch["input_ids"].shape[0])

    setattr(Recorder, _hook, _record)


def _small_task(default_stream, n=24):
    task = default_stream.tasks[0]
    return Task(task.name, task.train.select(range(n)), task.test, task.metric)


def _template(tiny, config, plugins=(), scope="language_model", strategy="naive", **params):
    model, processor = tiny
    preset = build_preset(strategy, **params)
    model = preset.prepare(model, scope)
    return Template(model, Encoder(processor), config, [*preset.plugins, *plugins], progress=False)


def test_hooks_run_in_avalanche_order_and_updates_are_counted(tiny, default_stream):
    recorder = Recorder()
    config = TrainConfig(batch_size=8, max_steps=2, grad_accum=2, lr=1e-3)
    template = _template(tiny, config, [recorder])
    template.train(Experience(1, [_small_task(default_stream)]))
    calls = recorder.calls
    assert calls[:3] == ["adapt_model", "before_training_exp", "before_training_epoch"]
    assert calls[-2:] == ["after_training_epoch", "after_training_exp"]
    # 2 updates × 2 accumulated iterations = 4 forward passes, 2 optimizer updates
    assert calls.count("before_forward") == 4
    assert calls.count("before_update") == calls.count("after_update") == 2
    assert calls.count("after_accumulation") == 2
    first_iteration = calls[
        calls.index("before_training_iteration") : calls.index("after_training_iteration") + 1
    ]
    assert first_iteration == [
        "before_training_iteration",
        "before_forward",
        "after_forward",
        "before_backward",
        "after_backward",
        "after_training_iteration",
    ]
    second = calls.index("after_training_iteration") + 1
    assert calls[second : second + 10] == [
        "before_training_iteration",
        "before_forward",
        "after_forward",
        "before_backward",
        "after_backward",
        "after_accumulation",  # once per update, after its last micro-batch
        "before_update",
        "after_update",
        "after_training_iteration",
        "before_training_iteration",
    ]
    assert set(calls) == set(TRAINING_HOOKS)


def test_naive_trains_the_language_model_only(tiny, default_stream):
    template = _template(tiny, TrainConfig(batch_size=8, max_steps=3, lr=1e-3))
    vision = {n: p.detach().clone() for n, p in scope_parameters(template.model, "vision_tower").items()}
    language = {n: p.detach().clone() for n, p in scope_parameters(template.model, "language_model").items()}
    template.train(Experience(1, [_small_task(default_stream)]))
    after = dict(template.model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in vision.items())
    assert any(not torch.equal(after[n], v) for n, v in language.items())
    assert set(template.trainable_parameters()) == set(language)


def test_replay_mixes_buffer_rows_into_later_batches(tiny, default_stream):
    recorder = Recorder()
    config = TrainConfig(batch_size=8, max_steps=2, lr=1e-3)
    template = _template(tiny, config, [recorder], strategy="replay", buffer_size=10, replay_batch_size=3)
    first, second = default_stream.tasks[0], default_stream.tasks[1]
    template.train(Experience(1, [first]))
    assert recorder.batch_sizes == [8, 8]  # nothing to replay yet
    replay = template.plugins[0]
    assert sum(map(len, replay.buffer.values())) == 10
    template.train(Experience(2, [second]))
    assert recorder.batch_sizes[2:] == [11, 11]


def test_replay_gives_the_buffers_remainder_to_the_first_tasks(tiny, default_stream):
    # Avalanche's ExperienceBalancedBuffer.get_group_lengths: 11 rows over 3 tasks are 4, 4, 3.
    config = TrainConfig(batch_size=8, max_steps=1, lr=1e-3)
    template = _template(tiny, config, strategy="replay", buffer_size=11, replay_batch_size=1)
    for index, task in enumerate(default_stream.tasks[:3], start=1):
        template.train(Experience(index, [task]))
    buffer = template.plugins[0].buffer
    assert [len(buffer[t.name]) for t in default_stream.tasks[:3]] == [4, 4, 3]


class ReplayedRows(Plugin):
    """Records the rows of every minibatch (after replay has added its picks)."""

    def __init__(self):
        self.rows: list[list[tuple[str, int]]] = []

    def before_forward(self, strategy) -> None:
        self.rows.append([(task.name, i) for task, i in strategy.mb_examples])


def _replay_draws(tiny, default_stream, seed: int) -> tuple[dict, list]:
    """The buffer after two experiences and the rows replayed in the second, for a run's seed."""
    recorder = ReplayedRows()
    config = TrainConfig(batch_size=8, max_steps=2, lr=1e-3, seed=seed)
    template = _template(tiny, config, [recorder], strategy="replay", buffer_size=10, replay_batch_size=3)
    template.train(Experience(1, [_small_task(default_stream)]))
    template.train(Experience(2, [default_stream.tasks[1]]))
    return template.plugins[0].buffer, [rows[8:] for rows in recorder.rows[2:]]


def test_replay_draws_its_buffer_from_the_runs_seed(tiny, default_stream):
    model, processor = tiny
    state = {n: p.detach().clone() for n, p in model.state_dict().items()}

    def draws(seed):
        model.load_state_dict(state)  # every run starts from the same weights
        return _replay_draws((model, processor), default_stream, seed)

    first, again, other = draws(0), draws(0), draws(1)
    assert first == again
    buffer, replayed = first
    assert sum(map(len, buffer.values())) == 10 and all(len(rows) == 3 for rows in replayed)
    assert other[0] != buffer and other[1] != replayed


def test_non_finite_loss_stops_with_a_clear_message(tiny, default_stream):
    template = _template(tiny, TrainConfig(batch_size=8, max_steps=2, lr=1e-3))
    with torch.no_grad():
        next(p for n, p in template.model.named_parameters() if "lm_head" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="lower the learning rate"):
        template.train(Experience(1, [_small_task(default_stream)]))


def test_same_seed_gives_identical_weights(default_stream, tiny_cached):
    from cltune.models.loading import load_model

    weights = []
    for _ in range(2):
        tiny = load_model("tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed)
        template = _template(tiny, TrainConfig(batch_size=8, max_steps=3, lr=1e-3, seed=5))
        template.train(Experience(1, [_small_task(default_stream)]))
        weights.append({n: p.detach().clone() for n, p in template.model.named_parameters()})
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_bad_training_options_are_refused():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="Did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 2})
    with pytest.raises(ValueError, match="unknown strategy 'naiv'.*Did you mean 'naive'"):
        build_preset("naiv")
    with pytest.raises(ValueError, match="selection must be one of"):
        build_preset("replay", selection="oldest")


@pytest.mark.parametrize("seed", [0, 2**31 + 5, 2**32 - 1])
def test_seeding_through_transformers_draws_the_streams_of_the_hand_written_seeding(seed):
    import random

    import numpy as np

    from cltune.utils import seed_everything

    def draws():
        return random.random(), np.random.random(3).tolist(), torch.rand(3).tolist()

    seed_everything(seed)
    through_transformers = draws()
    random.seed(seed)  # what cltune did by hand before it called transformers.set_seed
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    assert through_transformers == draws()
    seed_everything(seed + 1 if seed < 2**32 - 1 else 0)
    assert draws() != through_transformers
