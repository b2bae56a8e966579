"""Regularizers on the real tiny LLaVA: the importances they keep, the penalties they add to the
loss (value and gradient), online vs separate EWC, LwF's answer-token distillation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.methods.lwf import answer_distillation
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.penalties import accumulated
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template


class LossProbe(Plugin):
    """Records, at every before_backward, what the plugins before it added to the model's loss."""

    def __init__(self) -> None:
        self.added: list[float] = []

    def before_backward(self, strategy) -> None:
        self.added.append(float((strategy.loss - strategy.mb_output.loss).detach()))


def _task(default_stream, index: int = 0, n: int = 16) -> Task:
    task = default_stream.tasks[index]
    return Task(task.name, task.train.select(range(n)), task.test, task.metric)


def _strategy(tiny, name: str, max_steps: int = 1, **params):
    model, processor = tiny
    preset = build_preset(name, **params)
    model = preset.prepare(model, "language_model")
    probe = LossProbe()
    config = TrainConfig(batch_size=8, max_steps=max_steps, lr=1e-3)
    template = Template(model, Encoder(processor), config, [*preset.plugins, probe], progress=False)
    return template, preset.plugins[0], probe


def test_ewc_keeps_the_mean_squared_batch_gradient_and_penalises_by_it(tiny, default_stream):
    template, ewc, _ = _strategy(tiny, "ewc", strength=100.0, fisher_batches=2)
    template.train(Experience(1, [_task(default_stream)]))
    ((fisher, anchor),) = ewc.terms
    params = template.trainable_parameters()
    # the empirical Fisher by hand: the mean over the same two batches of the squared batch gradient
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = list(template.calibration_batches(2, "ewc"))
    for batch in batches:
        template.model.zero_grad()
        template.model(**batch).loss.backward()
        for n, p in params.items():
            expected[n] += p.grad.float() ** 2 / len(batches)
    template.model.zero_grad()
    for n in params:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-12)
        assert torch.equal(anchor[n], params[n].detach())

    # the penalty λ/2 Σ F (θ − θ*)² and its gradient λ F (θ − θ*)
    ewc.before_training_exp(template)
    shift = {n: 1e-2 * torch.randn_like(p) for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.add_(shift[n])
    penalty = ewc.penalty()
    by_hand = sum(float((fisher[n] * (p.detach() - anchor[n]) ** 2).sum()) for n, p in params.items())
    assert float(penalty) == pytest.approx(0.5 * 100.0 * by_hand, rel=1e-4)
    penalty.backward()
    name = next(iter(params))
    torch.testing.assert_close(
        params[name].grad, 100.0 * fisher[name] * (params[name].detach() - anchor[name])
    )


def test_online_ewc_keeps_one_decayed_term_where_separate_keeps_one_per_task(
    tiny, default_stream, tiny_cached
):
    from cltune.models.loading import load_model

    runs = {}
    for mode in ("separate", "online"):
        tiny = load_model("tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed)
        template, ewc, probe = _strategy(tiny, "ewc", mode=mode, decay=0.5, fisher_batches=1)
        for index in (1, 2):
            template.train(Experience(index, [_task(default_stream, index - 1)]))
        runs[mode] = (ewc.terms, probe.added)
    separate, online = runs["separate"][0], runs["online"][0]
    assert len(separate) == 2 and len(online) == 1
    (f1, _), (f2, a2) = separate
    for n in f1:
        torch.testing.assert_close(online[0][0][n], 0.5 * f1[n] + f2[n])
        torch.testing.assert_close(online[0][1][n], a2[n])
    assert runs["separate"][1] == runs["online"][1]  # one term at the second task: the same penalty
    assert runs["separate"][1][0] == 0.0  # no penalty before the first task is consolidated


def test_l2_adds_half_lambda_squared_distance_from_the_start_of_the_task(tiny, default_stream):
    class Distance(Plugin):
        def before_training_exp(self, strategy):
            self.start = {n: p.detach().clone() for n, p in strategy.trainable_parameters().items()}
            self.squared: list[float] = []

        def before_backward(self, strategy):
            params = strategy.trainable_parameters()
            self.squared.append(sum(float(((params[n] - s) ** 2).sum()) for n, s in self.start.items()))

    template, _, probe = _strategy(tiny, "l2", max_steps=3, strength=10.0)
    distance = Distance()
    template.plugins.append(distance)
    template.train(Experience(1, [_task(default_stream, n=24)]))
    assert probe.added[0] == 0.0 and distance.squared[0] == 0.0
    for added, squared in zip(probe.added[1:], distance.squared[1:], strict=True):
        assert squared > 0 and added == pytest.approx(0.5 * 10.0 * squared, rel=1e-3)


def test_mas_and_si_keep_non_negative_importances_anchored_at_the_last_weights(tiny, default_stream):
    for name in ("mas", "si"):
        template, plugin, probe = _strategy(tiny, name, max_steps=2)
        template.train(Experience(1, [_task(default_stream)]))
        ((omega, anchor),) = plugin.terms
        params = template.trainable_parameters()
        assert set(omega) == set(params)
        assert all(bool((o >= 0).all()) for o in omega.values())
        assert sum(float(o.sum()) for o in omega.values()) > 0
        assert all(torch.equal(anchor[n], p.detach().float()) for n, p in params.items())
        assert probe.added == [0.0, 0.0]  # nothing learned before: no penalty yet


def test_accumulated_importance_decays_the_old_term():
    old = [({"w": torch.tensor([2.0, 4.0])}, {"w": torch.zeros(2)})]
    new = {"w": torch.tensor([1.0, 1.0])}
    assert torch.equal(accumulated(old, new, decay=0.5)["w"], torch.tensor([2.0, 3.0]))
    assert accumulated([], new) is new


def test_answer_distillation_by_hand():
    student = torch.tensor([[[1.0, 0.0, -1.0], [5.0, 5.0, 5.0], [0.0, 2.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 1.0, 0.0], [9.0, -9.0, 0.0], [3.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 2, -100]])  # only position 0 predicts an answer token

    def log_softmax(z):
        z = z - z.max()
        return z - np.log(np.exp(z).sum())

    t, s = log_softmax(teacher[0, 0].numpy() / 2.0), log_softmax(student[0, 0].numpy() / 2.0)
    expected = 4.0 * float((np.exp(t) * (t - s)).sum())  # T² · KL(p_teacher ‖ p_student), T = 2
    assert float(answer_distillation(student, teacher, labels, 2.0)) == pytest.approx(expected, rel=1e-5)
    moved = student.clone()
    moved[0, 1:] += 100.0  # logits off the answer positions do not count
    assert float(answer_distillation(moved, teacher, labels, 2.0)) == pytest.approx(expected, rel=1e-5)
    assert float(answer_distillation(teacher, teacher, labels, 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_lwf_distils_the_model_from_before_the_task(tiny, default_stream):
    template, _, probe = _strategy(tiny, "lwf", max_steps=2, alpha=1.0)
    template.train(Experience(1, [_task(default_stream)]))
    assert probe.added[0] == pytest.approx(0.0, abs=1e-5)  # the teacher is the student at step 0
    assert probe.added[1] > 1e-4  # after one update they differ


def test_regularizer_state_survives_a_resume(tiny, default_stream):
    template, ewc, _ = _strategy(tiny, "ewc", fisher_batches=1)
    template.train(Experience(1, [_task(default_stream)]))
    fresh = build_preset("ewc").plugins[0]
    fresh.load_state_dict(ewc.state_dict())  # tensors at rest on the CPU
    for plugin in (ewc, fresh):
        plugin.before_training_exp(template)  # back on the weights' device
    with torch.no_grad():
        for p in template.trainable_parameters().values():
            p.add_(1e-2)
    assert float(fresh.penalty()) == float(ewc.penalty()) > 0


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("ewc", {"mode": "offline"}, "mode must be one of"),
        ("ewc", {"strength": -1.0}, "strength must be a finite number >= 0"),
        ("ewc", {"fisher_batches": 0}, "fisher_batches must be a positive integer"),
        ("mas", {"strength": float("inf")}, "strength must be a finite number >= 0"),
        ("si", {"xi": 0.0}, "xi .* must be > 0"),
        ("lwf", {"temperature": 0}, "temperature must be a number > 0"),
        ("lwf", {"alpha": -0.5}, "alpha must be a finite number >= 0"),
        ("l2", {"strength": -1.0}, "strength must be a finite number >= 0"),
    ],
)
def test_bad_options_are_refused(name, params, message):
    with pytest.raises(ValueError, match=rf"{name}: {message}"):
        build_preset(name, **params)


@pytest.mark.parametrize("name", ["ewc", "lwf", "l2"])
def test_a_scope_without_trainable_parameters_is_a_clear_error(tiny, default_stream, name):
    template, plugin, _ = _strategy(tiny, name)
    for p in template.model.parameters():
        p.requires_grad_(False)
    template.experience = Experience(1, [_task(default_stream)])
    with pytest.raises(ValueError, match=rf"{name}: the scope 'language_model' has no trainable parameters"):
        plugin.before_training_exp(template)
