"""Training options: learning-rate warm-up and schedules, bf16 and fp16 autocast (fp16 with loss
scaling), gradient checkpointing."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from cltune.data.encode import Encoder
from cltune.models.scopes import set_trainable
from cltune.rundir import RunDirectory
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


def train(tiny, task, *plugins: Plugin, **options) -> tuple[Template, Recorder]:
    model, processor = tiny
    config = TrainConfig(batch_size=4, lr=1e-2, **options)
    set_trainable(model, config.scope)
    recorder = Recorder()
    template = Template(model, Encoder(processor, "tiny"), config, [recorder, *plugins], progress=False)
    template.train(Experience(1, [task]))
    return template, recorder


def _delta(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])


def _restore(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for n, p in model.named_parameters():
        p.data.copy_(before[n])


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
    delta32 = _delta(fp32.model, before)
    _restore(fp32.model, before)  # same start for the bf16 run
    bf16, bf16_seen = train(tiny, task, max_steps=3, precision="bf16", gradient_checkpointing=True)
    delta16 = _delta(bf16.model, before)
    assert fp32_seen.dtypes == {torch.float32} and bf16_seen.dtypes == {torch.bfloat16}
    assert bf16.model.is_activation_checkpointing
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # weights stay fp32
    cosine = torch.nn.functional.cosine_similarity(delta32, delta16, dim=0)
    assert cosine > 0.9, f"bf16 updates point elsewhere than fp32's (cosine {cosine:.3f})"
    assert not torch.equal(delta32, delta16)  # autocast did change the arithmetic


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "int8"}, r"precision must be one of \('fp32', 'bf16', 'fp16'\)"),
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


class ScalerProbe(Plugin):
    """Under fp16: per update, whether the weights moved, the loss scale at backward and after the
    update, and which updates reached ``after_accumulation`` and ``before_update``; injects an
    infinite gradient into update ``inject_at``; keeps the minibatch and true gradients of the first
    update that ran."""

    def __init__(self, inject_at: int) -> None:
        self.inject_at = inject_at
        self.accumulated: list[int] = []
        self.applied: list[int] = []
        self.moved: list[bool] = []
        self.scales: list[tuple[float, float]] = []
        self.first: tuple[dict, dict[str, torch.Tensor]] | None = None

    def before_training_iteration(self, strategy) -> None:
        self._weights = {n: p.detach().clone() for n, p in strategy.trainable_parameters().items()}

    def after_backward(self, strategy) -> None:
        self._scale = strategy.scaler.get_scale()
        if strategy.update_step == self.inject_at:
            next(iter(strategy.trainable_parameters().values())).grad.view(-1)[0] = math.inf

    def after_accumulation(self, strategy) -> None:
        self.accumulated.append(strategy.update_step)

    def before_update(self, strategy) -> None:
        self.applied.append(strategy.update_step)
        if self.first is None:
            grads = {n: p.grad.clone() for n, p in strategy.trainable_parameters().items()}
            self.first = (dict(strategy.mbatch), grads)

    def after_training_iteration(self, strategy) -> None:
        now = strategy.trainable_parameters()
        self.moved.append(any(not torch.equal(now[n], w) for n, w in self._weights.items()))
        self.scales.append((self._scale, strategy.scaler.get_scale()))


class DropGradients(Plugin):
    """Drops every gradient of the given updates, so that AdamW leaves the weights and its own state
    as they were: an fp32 run that skips the updates an fp16 run skipped for overflow."""

    def __init__(self, updates: set[int]) -> None:
        self.updates = updates

    def after_backward(self, strategy) -> None:
        if strategy.update_step in self.updates:
            for p in strategy.trainable_parameters().values():
                p.grad = None


def test_fp16_trains_close_to_fp32(tiny, default_stream) -> None:
    task = default_stream.tasks[0]
    before = {n: p.detach().clone() for n, p in tiny[0].named_parameters()}
    probe = ScalerProbe(inject_at=-1)
    fp16, seen = train(tiny, task, probe, max_steps=4, precision="fp16")
    delta16 = _delta(fp16.model, before)
    assert seen.dtypes == {torch.float16}
    assert all(p.dtype == torch.float32 for p in fp16.model.parameters())  # weights stay fp32
    skipped = set(range(4)) - set(probe.applied)
    assert fp16.skipped_updates == len(skipped) < 4
    # the same updates in fp32 (the first scale, 2**16, overflows on some CPUs' low bits and not others)
    _restore(fp16.model, before)
    fp32, _ = train(tiny, task, DropGradients(skipped), max_steps=4)
    delta32 = _delta(fp32.model, before)
    cosine = torch.nn.functional.cosine_similarity(delta32, delta16, dim=0)
    assert cosine > 0.9, f"fp16 updates point elsewhere than fp32's (cosine {cosine:.3f})"


def test_fp16_scales_the_loss_and_skips_overflowed_updates(tiny, default_stream) -> None:
    model = tiny[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe = ScalerProbe(inject_at=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. lr_scheduler.step() without an optimizer step
        template, recorder = train(
            tiny,
            default_stream.tasks[0],
            probe,
            max_steps=5,
            precision="fp16",
            max_grad_norm=None,
            lr_schedule="linear",
        )
    skipped = [i for i in range(5) if i not in probe.applied]
    assert 2 in skipped and template.skipped_updates == len(skipped) < 5
    assert probe.accumulated == probe.applied  # the accumulation boundary of the updates that step
    for i in range(5):
        assert probe.moved[i] == (i not in skipped), i  # a skipped update leaves every weight as it was
        scale_before, scale_after = probe.scales[i]
        assert scale_after == (scale_before / 2 if i in skipped else scale_before), i
    assert template.scheduler.last_epoch == len(probe.applied)  # the schedule waits for real steps
    assert len(recorder.lrs) == len(probe.applied)

    # the first update that ran saw the true gradients: the weights were still the initial ones
    batch, grads = probe.first
    _restore(model, before)
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()  # fp32, no autocast, no scaling
    for name, g in grads.items():
        reference = dict(model.named_parameters())[name].grad
        error = float((g - reference).norm() / reference.norm().clamp_min(1e-12))
        assert error < 0.05, f"{name}: fp16 gradient off the fp32 one by {error:.3f} of its norm"


def test_fp16_masked_strategy_leaves_masked_out_weights_bit_identical(tiny, default_stream, tmp_path):
    from cltune.selective import load_masks
    from cltune.strategies.registry import build_preset

    model, processor = tiny
    preset = build_preset("magnitude-mask", ratio=0.5)
    model = preset.prepare(model, "language_model")
    config = TrainConfig(batch_size=8, max_steps=3, lr=1e-3, weight_decay=0.1, precision="fp16")
    template = Template(model, Encoder(processor), config, preset.plugins, progress=False)
    template.run_dir = RunDirectory(tmp_path)
    scope = template.trainable_parameters()
    before = {n: p.detach().clone() for n, p in scope.items()}
    template.train(Experience(1, [default_stream.tasks[0]]))
    assert template.skipped_updates < 3
    masks = load_masks(tmp_path / "analysis" / f"masks-{default_stream.tasks[0].name}.safetensors")
    assert set(masks) == set(before)
    moved = 0
    for name, p in scope.items():
        changed = p.detach() != before[name]
        assert not bool((changed & ~masks[name]).any()), name  # masked out: bit for bit
        moved += int(changed.sum())
    assert moved > 0


class SpiderSum(Plugin):
    """SPIDER's running ΣG, flattened, after each update (runs after the SPIDER plugin)."""

    def __init__(self, spider: Plugin) -> None:
        self.spider = spider

    def after_update(self, strategy) -> None:
        self.grad_sum = torch.cat([g.flatten() for g in self.spider._grad_sum.values()])


def test_fp16_spider_sums_unscaled_gradients(tiny, default_stream) -> None:
    from cltune.strategies.registry import build_preset

    sums = {}
    before = {n: p.detach().clone() for n, p in tiny[0].named_parameters()}
    for precision in ("fp32", "fp16"):
        _restore(tiny[0], before)
        spider = build_preset("spider").plugins[0]
        probe = SpiderSum(spider)
        train(tiny, default_stream.tasks[0], spider, probe, max_steps=3, precision=precision)
        sums[precision] = probe.grad_sum
    assert bool(sums["fp16"].isfinite().all())  # an overflowed update adds nothing
    ratio = float(sums["fp16"].norm() / sums["fp32"].norm())
    assert 0.3 < ratio < 3, f"fp16 ΣG has {ratio:.3g} times the norm of fp32's (loss scale left in?)"


class UpdateGradients(Plugin):
    """The sum over updates of each update's whole gradient, as the optimizer steps it (clipped)."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None

    def before_update(self, strategy) -> None:
        grad = torch.cat([p.grad.flatten() for p in strategy.trainable_parameters().values()])
        self.sum = grad.clone() if self.sum is None else self.sum + grad


def test_spider_adds_each_update_gradient_once_under_accumulation(tiny, default_stream) -> None:
    from cltune.strategies.registry import build_preset

    spider = build_preset("spider").plugins[0]
    truth, probe = UpdateGradients(), SpiderSum(spider)
    train(tiny, default_stream.tasks[0], spider, truth, probe, max_steps=3, grad_accum=2, max_grad_norm=None)
    assert torch.allclose(probe.grad_sum, truth.sum, rtol=1e-5, atol=1e-7)


def test_spider_sums_the_clipped_gradients_the_optimizer_steps(tiny, default_stream) -> None:
    # The authors' SPIDER.py reads each parameter's gradient after optimizer.step(), i.e. after
    # clip_grad_norm_: ΣG of 3 updates clipped to norm 1e-3 has a norm of at most 3e-3.
    from cltune.strategies.registry import build_preset

    spider = build_preset("spider").plugins[0]
    truth, probe = UpdateGradients(), SpiderSum(spider)
    train(tiny, default_stream.tasks[0], spider, truth, probe, max_steps=3, max_grad_norm=1e-3)
    assert float(probe.grad_sum.norm()) <= 3e-3 * (1 + 1e-5)
    assert torch.allclose(probe.grad_sum, truth.sum, rtol=1e-5, atol=1e-9)


def test_fp16_is_refused_where_it_cannot_run(monkeypatch) -> None:
    from cltune import distributed

    with pytest.raises(
        ValueError, match=r"precision='fp16' does not run on the device 'meta'.*use precision='bf16'"
    ):
        TrainConfig(precision="fp16").check_precision("meta")
    TrainConfig(precision="fp16").check_precision("cpu")  # this torch: CPU float16 autocast and scaler
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match=r"precision='fp16' under FSDP.*--set precision=bf16"):
        distributed.check_strategy("naive", [], TrainConfig(precision="fp16"))


def test_quiet_hides_every_progress_bar_and_the_default_shows_them(
    capsys, small_recipe, tmp_path, tiny_cached
):
    """``cltune run --quiet`` (training, evaluation, model loading, analyses, report) writes no bar;
    ``cltune analyze`` and ``cltune report`` show theirs unless ``--quiet``."""
    from cltune.cli import main

    recipe = tmp_path / "captions.toml"  # a captions task: its source maps with datasets' bar
    recipe.write_text(
        small_recipe.read_text() + '[[tasks]]\nname = "caption"\nsource = "captions"\ndataset = "digits"\n'
    )
    out = tmp_path / "runs"
    run = [str(recipe), "--strategies", "naive", "--set", "max_steps=1", "--out", str(out)]
    assert main(["run", *run, "--analyze", "drift", "--quiet"]) == 0
    assert "%|" not in capsys.readouterr().err
    run_dir = next(p for p in out.iterdir() if (p / "results.json").is_file())
    assert main(["analyze", str(run_dir), "--analyze", "drift"]) == 0
    assert "analyse " in capsys.readouterr().err
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert "report figures" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    assert "%|" not in capsys.readouterr().err
