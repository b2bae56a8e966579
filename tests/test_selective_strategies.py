"""Selective strategies on the real tiny LLaVA: exactly the chosen entries move, masks are saved,
the kept fractions are exact, Model Tailor's "exact" compensation is the least-squares optimum, and bad
options are refused with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.models.scopes import scope_parameters
from cltune.rundir import RunDirectory
from cltune.selective import hft_select, load_masks, n_keep, spider_shares, topk_masks
from cltune.selective.importance import gradient
from cltune.selective.tailor import obs_compensate
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import build_preset, strategy_names
from cltune.strategies.template import Template

SELECTIVE = ("gmt", "importance-mask", "hft", "spider", "magnitude-mask", "lt-sft", "model-tailor")


def _task(default_stream, index: int = 0, n: int = 16) -> Task:
    task = default_stream.tasks[index]
    return Task(task.name, task.train.select(range(n)), task.test, task.metric)


def _strategy(tiny, name: str, run_dir=None, weight_decay: float = 0.1, max_steps: int = 2, **params):
    model, processor = tiny
    preset = build_preset(name, **params)
    model = preset.prepare(model, "language_model")
    config = TrainConfig(batch_size=8, max_steps=max_steps, lr=1e-3, weight_decay=weight_decay)
    template = Template(model, Encoder(processor), config, preset.plugins, progress=False)
    template.run_dir = None if run_dir is None else RunDirectory(run_dir)
    return template, preset.plugins[0]


def _scope(template: Template) -> dict[str, torch.Tensor]:
    """The language model's weights (the default scope), detached copies."""
    return {n: p.detach().clone() for n, p in scope_parameters(template.model, "language_model").items()}


def _changed(template: Template, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    now = dict(template.model.named_parameters())
    return {n: now[n].detach() != b for n, b in before.items()}


def test_every_selective_strategy_is_registered():
    assert set(SELECTIVE) <= set(strategy_names())


def test_gmt_moves_exactly_the_top_gradient_entries_and_saves_its_masks(tiny, default_stream, tmp_path):
    template, plugin = _strategy(tiny, "gmt", tmp_path, ratio=0.05)
    first = Experience(1, [_task(default_stream, 0)])
    # the mask GMT must pick: top 5% per tensor of |Σ grad| over the experience's own batches
    template.experience = first
    params = template.trainable_parameters()
    expected = topk_masks(
        gradient(template.model, params, template.calibration_batches(None, "gmt"), dtype=torch.bfloat16),
        0.05,
    )
    before = _scope(template)
    template.train(first)
    masks = load_masks(tmp_path / "analysis" / "masks-parity.safetensors")
    assert set(masks) == set(params)
    for name, changed in _changed(template, before).items():
        assert torch.equal(masks[name], expected[name].cpu()), name
        assert int(masks[name].sum()) == n_keep(0.05, masks[name].numel())
        # outside the mask: bit-identical; inside: every non-zero entry moved (AdamW decay at least)
        assert torch.equal(changed, masks[name] & (before[name] != 0)), name
    assert template.optimizer.param_groups[0]["weight_decay"] == 0.1  # given back after the experience
    stats = template.extra_results["masks"]["parity"]
    assert stats["density"] == pytest.approx(0.05, abs=1e-3) and stats["jaccard_previous"] is None

    # a resumed run: a fresh plugin takes the state and compares the next mask with the first
    resumed, plugin2 = _strategy(tiny, "gmt", tmp_path, ratio=0.05)
    plugin2.load_state_dict(plugin.state_dict())
    resumed.train(Experience(2, [_task(default_stream, 1)]))
    second = load_masks(tmp_path / "analysis" / "masks-plus_one.safetensors")
    inter = sum(int((masks[n] & second[n]).sum()) for n in masks)
    union = sum(int((masks[n] | second[n]).sum()) for n in masks)
    assert resumed.extra_results["masks"]["plus_one"]["jaccard_previous"] == pytest.approx(inter / union)
    assert set(resumed.extra_results["masks"]) == {"parity", "plus_one"}


def test_magnitude_mask_never_moves_the_largest_half(tiny, default_stream):
    template, _ = _strategy(tiny, "magnitude-mask")
    before = _scope(template)
    template.train(Experience(1, [_task(default_stream)]))
    for name, changed in _changed(template, before).items():
        magnitude = before[name].abs().reshape(-1)
        k = n_keep(0.5, magnitude.numel())
        smallest = torch.zeros_like(magnitude, dtype=torch.bool)
        smallest[magnitude.argsort(stable=True)[:k]] = True
        moved = changed.reshape(-1)
        assert not bool((moved & ~smallest).any()), name
        if magnitude.min() < magnitude.max():  # a strict top half exists: its entries never move
            assert not bool(moved[magnitude > magnitude.kthvalue(k).values].any()), name


def test_hft_trains_half_of_each_layers_matrices_and_redraws_them(tiny, default_stream, tmp_path):
    template, _ = _strategy(tiny, "hft", tmp_path, weight_decay=0.0)
    scope = {n: p for n, p in template.model.named_parameters() if p.requires_grad}
    chosen = []
    for index in (1, 2):
        before = _scope(template)
        template.train(Experience(index, [_task(default_stream, index - 1)]))
        changed = _changed(template, before)
        masks = load_masks(tmp_path / "analysis" / f"masks-{template.experience.name}.safetensors")
        trained = {n for n, m in masks.items() if bool(m.all())}
        matrices = {n for n, p in scope.items() if p.dim() == 2}
        assert trained & matrices == hft_select(scope, 0.5, _hft_seed(template))
        for name in matrices - trained:  # frozen matrices: bit-identical, and not trainable now
            assert not bool(changed[name].any()) and not bool(masks[name].any()), name
        assert any(bool(changed[n].any()) for n in trained & matrices)
        assert 0.3 < template.extra_results["masks"][template.experience.name]["density"] < 0.7
        chosen.append(trained & matrices)
    assert chosen[0] != chosen[1]  # a new random half per experience, from the whole scope


def _hft_seed(template: Template) -> int:
    from cltune.utils import derive_seed

    return derive_seed(template.config.seed, "hft", template.experience.index)


def test_lt_sft_keeps_exactly_the_stated_fraction(tiny, default_stream, tmp_path):
    template, _ = _strategy(tiny, "lt-sft", tmp_path, ratio=0.05)
    before = _scope(template)
    template.train(Experience(1, [_task(default_stream)]))
    masks = load_masks(tmp_path / "analysis" / "masks-parity.safetensors")
    for name, changed in _changed(template, before).items():
        assert torch.equal(changed, masks[name] & (before[name] != 0)), name
    # one threshold over the whole scope, as the reference: the count is exact in total only
    assert sum(int(m.sum()) for m in masks.values()) == n_keep(0.05, sum(m.numel() for m in masks.values()))
    assert len({round(float(m.float().mean()), 3) for m in masks.values()}) > 1
    assert template.model.training is False  # phase 1 ran inside; the template still closes the experience


def test_model_tailor_keeps_exactly_the_stated_fraction(tiny, default_stream, tmp_path):
    template, _ = _strategy(tiny, "model-tailor", tmp_path, weight_decay=0.0, max_steps=3, ratio=0.1)
    before = _scope(template)
    template.train(Experience(1, [_task(default_stream)]))
    masks = load_masks(tmp_path / "analysis" / "masks-parity.safetensors")
    linear = {id(m.weight) for m in template.model.modules() if isinstance(m, torch.nn.Linear)}
    params = dict(template.model.named_parameters())
    moved = kept = 0
    for name, changed in _changed(template, before).items():
        if id(params[name]) in linear:  # the reference's count: n − ⌊0.9·n⌋ − 1 per 128-column block
            for start in range(0, masks[name].shape[1], 128):
                block = masks[name][:, start : start + 128]
                assert int(block.sum()) == block.numel() - int(block.numel() * 0.9) - 1, name
        else:  # the tensors the reference does not patch: the top 10 % by |Δ|
            assert int(masks[name].sum()) == n_keep(0.1, masks[name].numel()), name
        assert not bool((changed & ~masks[name]).any()), name  # outside the patch: θ_pre bit for bit
        moved, kept = moved + int(changed.sum()), kept + int(masks[name].sum())
    assert 0.5 * kept < moved <= kept


class SpiderProbe(Plugin):
    """Reads the SPIDER plugin's running ΣG after each update (runs after it)."""

    def __init__(self, spider) -> None:
        self.spider = spider

    def after_update(self, strategy) -> None:
        self.grad_sum = {n: g.clone() for n, g in self.spider._grad_sum.items()}
        self.pre = self.spider._pre


def test_spider_blends_each_entry_by_its_share(tiny, default_stream):
    template, spider = _strategy(tiny, "spider", weight_decay=0.0)
    probe = SpiderProbe(spider)
    template.plugins.append(probe)
    before = _scope(template)
    template.train(Experience(1, [_task(default_stream)]))
    shares = spider_shares(probe.pre, probe.grad_sum)
    for name, changed in _changed(template, before).items():
        # c = 0 at the last step: θ_pre exactly; c > 0 with a gradient: moved
        assert torch.equal(changed, (shares[name] > 0) & (probe.grad_sum[name] != 0)), name
    stats = template.extra_results["spider"]["parity"]
    total = sum(c.numel() for c in shares.values())
    assert stats["updated_fraction"] == pytest.approx(
        sum(int((c > 0).sum()) for c in shares.values()) / total
    )
    assert 0.0 < stats["mean_share"] <= stats["updated_fraction"] < 1.0


def test_obs_compensation_is_the_least_squares_optimum():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=generator)
    hessian = 2 * x.T @ x / 40 + 0.01 * torch.eye(6)
    pre = torch.randn(4, 6, generator=generator)
    ft = pre + torch.randn(4, 6, generator=generator)
    keep = torch.tensor(
        [[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 0]], dtype=torch.bool
    )
    out = obs_compensate(ft, pre, keep, hessian)
    assert torch.equal(out[~keep], pre[~keep])  # reset entries: θ_pre exactly
    assert torch.equal(out[2], ft[2])  # nothing reset in row 2: nothing to compensate
    h = hessian.double().numpy()
    for row in range(4):
        k, r = keep[row].numpy(), ~keep[row].numpy()
        delta_r = (ft - pre)[row].double().numpy()[r]
        expected = ft[row].double().numpy()[k] + np.linalg.solve(h[np.ix_(k, k)], h[np.ix_(k, r)] @ delta_r)
        np.testing.assert_allclose(out[row].numpy()[k], expected, rtol=1e-4, atol=1e-5)
        # optimality: the layer-output error d^T H d has zero gradient along the kept entries
        d = (out[row] - ft[row]).double().numpy()
        np.testing.assert_allclose((h @ d)[k], 0.0, atol=1e-4)
    assert torch.allclose(obs_compensate(ft, pre, keep, hessian, max_elements=16), out)  # row chunks


MASK_STRATEGIES = ["gmt", "importance-mask", "lt-sft", "model-tailor", "magnitude-mask", "hft"]
AUTO_RATIO = ("gmt", "importance-mask")  # the strategies whose ratio may also be "auto"


@pytest.mark.parametrize("name", MASK_STRATEGIES)
@pytest.mark.parametrize("ratio", [0, -0.1, 1.5])
def test_ratio_outside_the_unit_interval_is_refused(name, ratio):
    with pytest.raises(ValueError, match=rf"{name}: ratio .*\(0, 1\]"):
        build_preset(name, ratio=ratio)


@pytest.mark.parametrize("name", MASK_STRATEGIES)
def test_a_ratio_that_is_not_a_number_is_refused(name):
    with pytest.raises(ValueError, match=rf"ratio of strategy '{name}' must be of type float.*, got True"):
        build_preset(name, ratio=True)
    words = (
        rf"{name}: ratio .*\(0, 1\] or 'auto', got 'half'" if name in AUTO_RATIO else "type float, got 'half'"
    )
    with pytest.raises(ValueError, match=words):
        build_preset(name, ratio="half")


@pytest.mark.parametrize("name", sorted(set(MASK_STRATEGIES) - set(AUTO_RATIO)))
def test_auto_ratio_only_where_an_importance_decides(name):
    with pytest.raises(ValueError, match=rf"ratio of strategy '{name}' must be of type float, got 'auto'"):
        build_preset(name, ratio="auto")
    build_preset("gmt", ratio="auto")


def test_unknown_or_unusable_importance_and_granularity_are_refused():
    with pytest.raises(ValueError, match=r"unknown importance-mask importance measure 'fishr'.*'fisher'"):
        build_preset("importance-mask", importance="fishr")
    with pytest.raises(ValueError, match="'spider' cannot choose a mask before training"):
        build_preset("importance-mask", importance="spider")
    with pytest.raises(ValueError, match="granularity must be one of"):
        build_preset("gmt", granularity="row")
    with pytest.raises(ValueError, match="calibration_batches"):
        build_preset("gmt", calibration_batches=0)


@pytest.mark.parametrize("name", ["gmt", "spider", "model-tailor"])
def test_a_scope_without_trainable_parameters_is_a_clear_error(tiny, default_stream, name):
    template, plugin = _strategy(tiny, name)
    for p in template.model.parameters():
        p.requires_grad_(False)
    template.experience = Experience(1, [_task(default_stream)])
    with pytest.raises(ValueError, match=rf"{name}: the scope 'language_model' has no trainable parameters"):
        plugin.before_training_exp(template)
