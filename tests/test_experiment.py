"""Experiments end to end: the CLI in a subprocess, run directories, resume, refusal of a changed config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cltune.experiment import RunSpec, run_experiment
from cltune.rundir import RunConfigMismatch
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import Preset, register

CRASH = {"at_experience": None}


class CrashPlugin(Plugin):
    """Simulates a run that dies when experience N starts (a pre-empted job)."""

    def before_training_exp(self, strategy):
        if strategy.experience.index == CRASH["at_experience"]:
            raise RuntimeError("simulated crash")


@register("test-crashable")
def crashable() -> Preset:
    """Naive fine-tuning that can be made to crash (tests only)."""
    return Preset(plugins=[CrashPlugin()])


def _spec(recipe_path, strategy="naive", **train):
    return RunSpec.from_recipe(recipe_path, strategy, **train)


def _cli(*args, cwd, **env):
    return subprocess.run(
        [sys.executable, "-m", "cltune.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=600,
    )


@pytest.mark.slow
def test_cli_run_writes_run_directories(small_recipe, tmp_path, tiny_cached):
    out = tmp_path / "runs"
    proc = _cli(
        "run", str(small_recipe), "--strategies", "naive,joint", "--out", str(out), "--quiet", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "small-naive-seed0" in proc.stdout and "BWT" in proc.stdout
    naive = out / "small-naive-seed0"
    results = json.loads((naive / "results.json").read_text())
    assert results["finished"] and results["strategy"] == "naive"
    values = np.array(results["matrix"]["values"], dtype=float)
    assert values.shape == (3, 3) and not np.isnan(values).any()
    assert results["matrix"]["tasks"] == ["parity", "greater_than_4"]
    assert results["matrix"]["general"] == ["digit"]
    assert set(results["summary"]) >= {"mft", "mfn", "bwt", "general_change"}
    assert {p.name for p in (naive / "predictions").iterdir()} == {
        "stage-0.json",
        "stage-1.json",
        "stage-2.json",
    }
    assert [p.name for p in naive.glob("checkpoint-*")] == ["checkpoint-2"]
    assert json.loads((naive / "config.json").read_text())["strategy"] == "naive"
    events = [json.loads(line)["event"] for line in (naive / "events.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "finished"
    joint = json.loads((out / "small-joint-seed0" / "results.json").read_text())
    assert len(joint["matrix"]["values"]) == 2 and joint["matrix"]["stages"] == ["zero-shot", "joint"]
    assert joint["summary"]["bwt"] is None


def test_cli_errors_name_the_problem(tmp_path):
    proc = _cli("run", "--strategies", "naive,ewk", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown strategy 'ewk'" in proc.stderr
    proc = _cli("run", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert proc.returncode == 2 and "missing.toml" in proc.stderr and "does not exist" in proc.stderr
    proc = _cli("run", "--set", "lr=0", cwd=tmp_path)
    assert proc.returncode == 2 and "lr must be positive" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_device_the_machine_lacks_fails_before_the_model_loads(tmp_path):
    cache = tmp_path / "cache"  # empty: loading the tiny model would pre-train it here
    proc = _cli(
        "run", "--set", "device=cuda", "--out", str(tmp_path / "runs"), cwd=tmp_path, CLTUNE_CACHE=str(cache)
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "device='cuda': this machine has no such device; it has cpu" in proc.stderr
    assert not cache.exists() and not (tmp_path / "runs").exists()


def test_resume_continues_after_the_last_finished_experience(small_recipe, tmp_path, tiny_cached):
    reference = run_experiment(_spec(small_recipe), tmp_path / "a", progress=False)
    spec = _spec(small_recipe, strategy="test-crashable")
    CRASH["at_experience"] = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(spec, tmp_path / "b", progress=False)
    run_dir = tmp_path / "b" / spec.run_name()
    partial = json.loads((run_dir / "results.json").read_text())
    assert not partial["finished"] and partial["matrix"]["values"][2] == [None, None, None]
    assert (run_dir / "checkpoint-1" / "params.safetensors").is_file()
    CRASH["at_experience"] = None
    resumed = run_experiment(spec, tmp_path / "b", progress=False)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resumed" and e["after_stage"] == 1 for e in events)
    assert sum(e["event"] == "train" for e in events) == 3  # experience 1 once, experience 2 twice
    np.testing.assert_array_equal(resumed.matrix.values, reference.matrix.values)


def test_a_changed_configuration_is_refused(small_recipe, tmp_path, tiny_cached):
    run_experiment(_spec(small_recipe, max_steps=1), tmp_path, progress=False)
    with pytest.raises(RunConfigMismatch, match=r"train\.lr: was 0\.001, now 0\.002"):
        run_experiment(_spec(small_recipe, max_steps=1, lr=2e-3), tmp_path, progress=False)


def test_python_api_runs_a_strategy(small_recipe, tmp_path, tiny_cached):
    import cltune

    result = cltune.run(small_recipe, "naive", out=tmp_path, max_steps=2, progress=False)
    assert result.matrix.values.shape == (3, 3)
    assert result.run_dir == tmp_path / "small-naive-seed0"
    assert result.metrics["mft"] == pytest.approx(np.mean(np.diag(result.matrix.values[1:, :2])))
    written = cltune.report(result)
    assert written["md"] == tmp_path / "report" / "report.md"  # beside the run, as `cltune run` writes it
    assert f"{result.metrics['mft']:.1f}" in written["md"].read_text()


def test_cli_report_defaults_to_a_report_folder_beside_the_runs(small_recipe, tmp_path, tiny_cached):
    from cltune.cli import main

    result = run_experiment(_spec(small_recipe, max_steps=1), tmp_path / "runs", progress=False)
    assert main(["report", str(result.run_dir), "--quiet"]) == 0
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "naive" in report
