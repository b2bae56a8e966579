"""Merging strategies on the real tiny LLaVA: each experience tunes from the base, the evaluated model
is exactly base + merge(task vectors) (full fine-tuning) or base + merged ΔW (LoRA, through PEFT),
merged adapters reload with plain PEFT, resume works, and bad options are refused clearly."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from test_adapters import crash_and_resume, crashable

from cltune.data.encode import Encoder, collate
from cltune.evaluation.generate import generate_answers
from cltune.experiment import RunSpec, load_trained_model, run_experiment
from cltune.merging import lora_delta_weights, merge_lora_deltas, merge_state_dicts
from cltune.models.loading import load_model
from cltune.models.scopes import scope_parameters
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.strategies.plugins.task_vector_merge import MergeSpec
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template

MERGE = {"method": "ties", "density": 0.5}


@pytest.fixture(scope="module")
def recipe(small_recipe, tiny_cached):
    return small_recipe


def _spec(recipe, strategy: str, **params) -> RunSpec:
    return RunSpec.from_recipe(recipe, strategy, params=params, lr=1e-2, max_steps=2)


@pytest.fixture(scope="module")
def lora_merge_run(recipe, tmp_path_factory):
    return run_experiment(
        _spec(recipe, "lora-merge", **MERGE), tmp_path_factory.mktemp("merge"), progress=False
    )


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("ties", {"density": 0.0}, r"density is the kept fraction and must lie in \(0, 1\]"),
        ("dare", {"density": 1.5}, r"must lie in \(0, 1\]"),
        ("dare", {"combine": "mean"}, "combine must be one of"),
        ("wise-ft", {"alpha": 2.0}, r"alpha must lie in \[0, 1\]"),
        ("task-arithmetic", {"weights": "half"}, "weights must be a number or a list of numbers"),
        ("lora-merge", {"method": "average"}, "unknown merge method 'average'"),
        ("lora-merge", {"merge_options": {"alpha": 0.5}}, "'task_arithmetic' has no option"),
        ("lora-merge", {"merge_rank": 0}, "merge_rank must be a positive integer"),
        ("lora-merge", {"lora_options": {"use_dora": True}}, "DoRA"),
        ("lora-merge", {"r": -2}, r"r must be a positive integer, got -2 \(the LoRA rank\)"),
        ("lora-merge", {"space": "weights"}, "space must be 'delta' .exact ΔW. or 'factors'"),
        ("lora-merge", {"space": "factors", "merge_rank": 4}, "merge_rank applies to space='delta'"),
    ],
)
def test_merge_strategies_refuse_bad_options(name, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_preset(name, **params)


def test_merge_weights_are_one_number_or_one_per_task() -> None:
    assert MergeSpec("ties").weights_for(3) is None
    assert MergeSpec("ties", 0.5).weights_for(2) == [0.5, 0.5]
    assert MergeSpec("ties", [1, 0.5, 0.25]).weights_for(2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="2 merge weights for 3 tasks"):
        MergeSpec("ties", [1, 2]).weights_for(3)


def test_dare_gets_a_seed_per_stage_unless_one_is_given() -> None:
    spec = MergeSpec("dare_linear", options={"density": 0.5})
    first, again, second = (spec.method_options(0, s)["rng"] for s in (1, 1, 2))
    assert first == again != second
    assert MergeSpec("dare_linear", options={"rng": 7}).method_options(0, 1)["rng"] == 7
    assert "rng" not in MergeSpec("ties").method_options(0, 1)


# --- full fine-tuning deltas ---------------------------------------------------------------


class TunedWeights(Plugin):
    """Records the scope's weights when an experience starts and when its training ends (before any
    merge plugin after it in the list rewrites them)."""

    def __init__(self):
        self.start: list[dict[str, torch.Tensor]] = []
        self.tuned: list[dict[str, torch.Tensor]] = []

    def _scope(self, strategy) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in scope_parameters(strategy.model, "language_model").items()}

    def before_training_exp(self, strategy) -> None:
        self.start.append(self._scope(strategy))

    def after_training_exp(self, strategy) -> None:
        self.tuned.append(self._scope(strategy))


@pytest.mark.parametrize(
    ("name", "params", "method", "options", "weights"),
    [
        ("ties", {"density": 0.3}, "ties", {"density": 0.3}, None),
        ("task-arithmetic", {"weights": 0.7}, "task_arithmetic", {}, [0.7, 0.7]),
        ("wise-ft", {"alpha": 0.25}, "wise_ft", {"alpha": 0.25}, None),
        ("dare", {"density": 0.5, "weights": [1.0, 0.5]}, "dare_linear", {"density": 0.5}, [1.0, 0.5]),
    ],
)
def test_task_vector_strategies_evaluate_base_plus_the_merge(
    tiny, default_stream, name, params, method, options, weights
) -> None:
    model, processor = tiny
    base = {n: p.detach().clone() for n, p in scope_parameters(model, "language_model").items()}
    preset = build_preset(name, **params)
    probe = TunedWeights()
    model = preset.prepare(model, "language_model")
    config = TrainConfig(batch_size=8, max_steps=2, lr=1e-3, seed=3)
    strategy = Template(model, Encoder(processor), config, [probe, *preset.plugins], progress=False)
    for index in (1, 2):
        strategy.train(Experience(index, [default_stream.tasks[index - 1]]))
    for start in probe.start:  # every experience tunes from the base
        assert all(torch.equal(start[n], base[n]) for n in base)
    deltas = [{n: tuned[n] - base[n] for n in base} for tuned in probe.tuned]
    seeded = MergeSpec(method).method_options(config.seed, 2)  # DARE: the seed of stage 2
    merged = merge_state_dicts(deltas, method, weights, **{**seeded, **options})
    now = scope_parameters(strategy.model, "language_model")
    for n in base:
        torch.testing.assert_close(now[n], base[n] + merged[n], rtol=0, atol=1e-6)


def test_ties_after_one_task_keeps_exactly_the_top_density_entries(tiny, default_stream) -> None:
    model, processor = tiny
    base = {n: p.detach().clone() for n, p in scope_parameters(model, "language_model").items()}
    preset = build_preset("ties", density=0.25)
    config = TrainConfig(batch_size=8, max_steps=2, lr=1e-3)
    model = preset.prepare(model, "language_model")
    strategy = Template(model, Encoder(processor), config, preset.plugins, progress=False)
    strategy.train(Experience(1, [default_stream.tasks[0]]))
    (delta,) = preset.plugins[0].task_vectors
    for n, p in scope_parameters(strategy.model, "language_model").items():
        moved = p.detach() != base[n]
        nonzero = int((delta[n] != 0).sum())  # rows of unseen tokens do not move at all
        assert moved.sum() == min(int(0.25 * p.numel()), nonzero), n  # exactly ⌊k·numel⌋ kept
        kept = delta[n].abs()[moved]
        assert kept.min() >= delta[n].abs()[~moved].max(), n


# --- LoRA merging --------------------------------------------------------------------------


def _adapter(folder) -> tuple[dict[str, torch.Tensor], LoraConfig]:
    return load_file(str(folder / "adapter_model.safetensors")), LoraConfig.from_pretrained(str(folder))


def test_lora_merge_evaluates_base_plus_the_merged_delta(lora_merge_run, default_stream) -> None:
    folder = lora_merge_run.run_dir / "adapters"
    assert {p.name for p in folder.iterdir()} == {"parity", "greater_than_4", "merged-1", "merged-2"}
    tasks = [_adapter(folder / name) for name in ("parity", "greater_than_4")]
    expected = merge_lora_deltas([s for s, _ in tasks], [c for _, c in tasks], **MERGE)
    # the model the run evaluated, rebuilt as a resume does (merged adapter from the plugin state)
    model, processor, stream = load_trained_model(lora_merge_run.run_dir)
    assert model.active_adapters == ["merged-2"]
    layers = dict(model.named_modules())
    for key, delta in expected.items():
        layer = layers[key]
        torch.testing.assert_close(layer.get_delta_weight("merged-2"), delta, rtol=0, atol=1e-5)
    # the saved merged adapter is the same ΔW, and plain PEFT reloads it
    saved_state, saved_config = _adapter(folder / "merged-2")
    for key, delta in lora_delta_weights(saved_state, saved_config).items():
        torch.testing.assert_close(delta, expected[key], rtol=0, atol=1e-5)
    # functionally: logits equal those of a plain base model with W + ΔW written into its weights
    plain, _ = load_model("tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed)
    with torch.no_grad():
        weights = dict(plain.named_parameters())
        for key, delta in expected.items():
            weights[key.removeprefix("base_model.model.") + ".weight"] += delta
    encoder = Encoder(processor)
    task = stream.tasks[0]
    batch = collate([encoder.encode(task.test, i, task.name, False) for i in range(8)], encoder.pad_id)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, plain(**batch).logits, rtol=0, atol=1e-4)
    # and the rebuilt model answers what the run recorded at its last stage
    predictions = json.loads((lora_merge_run.run_dir / "predictions" / "stage-2.json").read_text())
    config = json.loads((lora_merge_run.run_dir / "config.json").read_text())
    strategy = Template(model, encoder, TrainConfig.from_dict(config["train"]), progress=False)
    assert generate_answers(strategy, task, progress=False) == predictions[task.name]


def test_first_merged_adapter_reloads_with_plain_peft(lora_merge_run, default_stream) -> None:
    folder = lora_merge_run.run_dir / "adapters"
    state, config = _adapter(folder / "parity")
    expected = merge_lora_deltas([state], [config], **MERGE)  # TIES of one ΔW: its top half by |.|
    base, _ = load_model("tiny", pretrain_tasks=default_stream.general, seed=default_stream.seed)
    reloaded = PeftModel.from_pretrained(base, str(folder / "merged-1"))
    layers = dict(reloaded.named_modules())
    for key, delta in expected.items():
        assert (delta != 0).sum() == delta.numel() // 2, key
        torch.testing.assert_close(layers[key].get_delta_weight("default"), delta, rtol=0, atol=1e-5)


def test_resumed_lora_merge_run_equals_the_uninterrupted_one(recipe, lora_merge_run, tmp_path) -> None:
    resumed = crash_and_resume(_spec(recipe, crashable("lora-merge"), **MERGE), tmp_path)
    assert (resumed.matrix.values == lora_merge_run.matrix.values).all()


@pytest.mark.slow
def test_resumed_ties_run_equals_the_uninterrupted_one(recipe, tmp_path) -> None:
    reference = run_experiment(_spec(recipe, "ties"), tmp_path / "a", progress=False)
    resumed = crash_and_resume(_spec(recipe, crashable("ties")), tmp_path / "b")
    assert (resumed.matrix.values == reference.matrix.values).all()
    stages = load_file(str(resumed.run_dir / "checkpoint-2" / "params.safetensors"))
    same = load_file(str(reference.run_dir / "checkpoint-2" / "params.safetensors"))
    assert all(torch.equal(stages[k], same[k]) for k in same)
