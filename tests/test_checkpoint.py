"""Checkpoints keep every parameter that differs from the loaded model, trainable or not: a frozen
weight that a plugin wrote survives a crash and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cltune.experiment import RunSpec, load_trained_model, run_experiment
from cltune.models.scopes import part_module
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import Preset, register

CRASH = {"at_experience": None}


class ProjectorBlinder(Plugin):
    """After experience 1, zeroes the projector's output weight, which no optimizer trains under
    the default scope (as InfLoRA designs a frozen ``A``, or a merge writes the base): the model
    goes blind to images."""

    full_parameters = "it writes a whole parameter by name"

    def after_training_exp(self, strategy) -> None:
        if strategy.experience.index == 1:
            weight = part_module(strategy.model, "projector").linear_2.weight
            assert not weight.requires_grad
            with torch.no_grad():
                weight.zero_()


class CrashPlugin(Plugin):
    """Dies when experience N starts (a pre-empted job), after checkpoint N-1 was written."""

    def before_training_exp(self, strategy) -> None:
        if strategy.experience.index == CRASH["at_experience"]:
            raise RuntimeError("simulated crash")


@register("test-frozen-writer")
def frozen_writer() -> Preset:
    """Naive fine-tuning whose plugin writes a frozen weight after experience 1 (tests only)."""
    return Preset(plugins=[ProjectorBlinder(), CrashPlugin()])


def test_a_frozen_weight_written_by_a_plugin_survives_crash_and_resume(small_recipe, tmp_path, tiny_cached):
    spec = RunSpec.from_recipe(small_recipe, "test-frozen-writer", max_steps=2)
    reference = run_experiment(spec, tmp_path / "reference", progress=False)
    CRASH["at_experience"] = 2
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_experiment(spec, tmp_path / "resumed", progress=False)
    finally:
        CRASH["at_experience"] = None
    resumed = run_experiment(spec, tmp_path / "resumed", progress=False)
    np.testing.assert_array_equal(resumed.matrix.values, reference.matrix.values)
    digit = reference.matrix.values[:, -1]  # the general task: which digit is in the image
    assert digit[1] < digit[0]  # blinding mattered, so a lost write would show in row 2
    model, _, _ = load_trained_model(resumed.run_dir)
    assert not part_module(model, "projector").linear_2.weight.any()
