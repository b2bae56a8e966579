"""Reliability: `cltune run` killed at named points resumes to the results of an uninterrupted run,
the same seed gives the same results, and a NaN loss keeps what was finished.

The kills are real SIGKILLs of a `python -m cltune run` subprocess, placed by the documented
``CLTUNE_FAULT=<point>@<n>`` hook (cltune/utils.py: fault_point).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cltune.analysis.runs import load_run
from cltune.experiment import DETERMINISTIC_ENV, RunSpec, run_experiment
from cltune.models.cache import cache_dir
from cltune.rundir import RunDirectory, read_events, read_results
from cltune.strategies.plugin import Plugin
from cltune.strategies.registry import Preset, register
from cltune.strategies.template import NonFiniteLoss
from cltune.utils import FAULT_ENV

STRATEGY, PARAMS, TRAIN = "replay", {"buffer_size": 8, "replay_batch_size": 4}, {"max_steps": 3}
CLI_OPTIONS = [
    "--strategies",
    STRATEGY,
    *[arg for key, value in PARAMS.items() for arg in ("--param", f"{STRATEGY}.{key}={value}")],
    *[arg for key, value in TRAIN.items() for arg in ("--set", f"{key}={value}")],
    *("--quiet", "--analyze", "none", "--no-report"),
]


def _cltune_run(recipe: Path, out: Path, env: dict[str, str], fault: str | None = None, timeout: int = 600):
    """`python -m cltune run` in a subprocess; ``fault`` names the point where it SIGKILLs itself."""
    env = {**os.environ, **env}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "cltune", "run", str(recipe), "--out", str(out), *CLI_OPTIONS],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
        timeout=timeout,
    )


def _assert_killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {proc.stderr[-2000:]}"


def _assert_whole(run_dir: Path) -> None:
    """Every visible file of the run directory is whole: JSON parses, checkpoints load."""
    for path in run_dir.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())
    read_events(run_dir)  # tolerates only a torn last line
    for stage in run_dir.glob("checkpoint-*/stage.json"):
        RunDirectory(run_dir, writes=False).load_checkpoint(json.loads(stage.read_text())["stage"])


def _rows_done(run_dir: Path) -> int:
    values = read_results(run_dir)["matrix"]["values"]
    return sum(None not in row for row in values) - 1


def _assert_same_run(resumed: Path, reference: Path) -> None:
    """Same configuration, matrix, summary, predictions and trained parameters."""
    for name in ("config.json", *(f"predictions/{p.name}" for p in (reference / "predictions").iterdir())):
        assert json.loads((resumed / name).read_text()) == json.loads((reference / name).read_text()), name
    a, b = read_results(resumed), read_results(reference)
    assert a["finished"] and b["finished"]
    assert a["matrix"] == b["matrix"] and a["summary"] == b["summary"]
    params_a = load_file(str(resumed / "checkpoint-2" / "params.safetensors"))
    params_b = load_file(str(reference / "checkpoint-2" / "params.safetensors"))
    assert params_a.keys() == params_b.keys()
    assert all(torch.equal(params_a[n], params_b[n]) for n in params_a)


@pytest.fixture(scope="module")
def recipe(small_recipe) -> Path:
    return small_recipe


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory, tiny_cached) -> Path:
    """The run uninterrupted, in this process, with the session's cached tiny model."""
    spec = RunSpec.from_recipe(recipe, STRATEGY, params=PARAMS, **TRAIN)
    return run_experiment(spec, tmp_path_factory.mktemp("reference"), progress=False).run_dir


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a minute on an idle 2-core machine; much longer on a busy one
def test_run_killed_during_pretraining_restarts_to_the_same_results(recipe, reference, tmp_path):
    """Pays for one pre-training of the tiny model in a fresh cache (about a minute on 2 cores)."""
    cache, out = tmp_path / "cache", tmp_path / "runs"
    out.mkdir()
    run_dir = out / reference.name
    env = {"CLTUNE_CACHE": str(cache)}
    _assert_killed(_cltune_run(recipe, out, env, "pretrain@5"))
    assert not list(cache.glob("tiny-*")) and not (run_dir / "config.json").exists()
    proc = _cltune_run(recipe, out, env, timeout=2000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (fresh,) = cache.glob("tiny-*")
    assert (cache_dir() / fresh.name / "config.json").is_file()  # the same cache key as the reference's
    _assert_same_run(run_dir, reference)  # so pre-training, restarted, made the same model


@pytest.mark.slow
def test_run_killed_in_training_evaluation_and_writing_resumes_to_the_same_results(
    recipe, reference, tmp_path
):
    out = tmp_path / "runs"
    out.mkdir()
    run_dir = out / reference.name
    env = {DETERMINISTIC_ENV: "1"}

    # During experience 2 (max_steps=3: the 4th update is experience 2's first).
    _assert_killed(_cltune_run(recipe, out, env, "after_update@4"))
    _assert_whole(run_dir)
    assert _rows_done(run_dir) == 1 and (run_dir / "checkpoint-1" / "stage.json").is_file()
    assert read_events(run_dir)[-1]["event"] == "train"
    after_stage_1 = (run_dir / "results.json").read_bytes()

    # During the evaluation after experience 2 (after its first task).
    _assert_killed(_cltune_run(recipe, out, env, "after_eval_exp@1"))
    _assert_whole(run_dir)
    assert (run_dir / "results.json").read_bytes() == after_stage_1
    assert any(e["event"] == "resumed" and e["after_stage"] == 1 for e in read_events(run_dir))

    # While results.json is written, after a torn events line (as a kill mid-append leaves).
    with open(run_dir / "events.jsonl", "a") as events:
        events.write('{"time": 1.0, "event": "tr')
    _assert_killed(_cltune_run(recipe, out, env, "write:results.json"))
    _assert_whole(run_dir)
    assert (run_dir / "results.json").read_bytes() == after_stage_1  # the old file, whole
    assert len(list(run_dir.glob(".results.json.*.tmp"))) == 1  # the half-written new one
    assert (run_dir / "checkpoint-2" / "stage.json").is_file()
    assert load_run(run_dir).checkpoint().name == "checkpoint-1"  # what results.json vouches for

    # Started again without a fault, it finishes and tidies what the kills left.
    proc = _cltune_run(recipe, out, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    repaired = [e for e in events if e["event"] == "repaired"]
    assert len(repaired) == 2 and "events.jsonl (torn last line)" in repaired[0]["removed"]
    assert Path(repaired[1]["removed"][0]).name.startswith(".results.json.")
    assert not list(run_dir.rglob("*.tmp"))
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-2"]
    assert read_results(run_dir)["runtime"]["deterministic_algorithms"] is True
    assert read_results(reference)["runtime"]["deterministic_algorithms"] is False
    _assert_same_run(run_dir, reference)


def test_same_recipe_and_seed_give_identical_results(recipe, reference, tmp_path):
    again = run_experiment(
        RunSpec.from_recipe(recipe, STRATEGY, params=PARAMS, **TRAIN), tmp_path, progress=False
    )
    _assert_same_run(again.run_dir, reference)
    runtime = again.results["runtime"]
    assert runtime["device"] == "cpu" and runtime["deterministic_algorithms"] is False
    assert "identical results" in runtime["note"]
    # ...on the same kind of CPU: the results name it and the vector kernels torch uses there
    machine = again.results["versions"]["machine"]
    assert f", {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads" in machine
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "cpu family" in cpuinfo.read_text():
        assert "(family " in machine


def test_adapters_start_from_the_seed_not_the_global_generator(recipe, tmp_path, tiny_cached):
    """torch's global generator starts from a different seed in every process; LoRA's factors
    must not depend on it (two runs of one recipe differed in 21 of 54 cells before)."""
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # what another process, or an earlier run, would leave
        spec = RunSpec.from_recipe(recipe, "lora", max_steps=1)
        run_dir = run_experiment(spec, tmp_path / str(global_seed), progress=False).run_dir
        runs.append(load_file(run_dir / "checkpoint-2" / "params.safetensors"))
    assert runs[0].keys() == runs[1].keys() and any("lora_A" in name for name in runs[0])
    assert all(torch.equal(runs[0][name], runs[1][name]) for name in runs[0])


class NanLossPlugin(Plugin):
    """Turns the loss into NaN in experience 2 (a diverging run)."""

    def before_backward(self, strategy) -> None:
        if strategy.experience.index == 2:
            strategy.loss = strategy.loss * math.nan


@register("test-nan-loss")
def nan_loss() -> Preset:
    """Naive fine-tuning whose loss becomes NaN in experience 2 (tests only)."""
    return Preset(plugins=[NanLossPlugin()])


def test_nan_loss_stops_the_experience_and_keeps_finished_ones(recipe, tmp_path, tiny_cached):
    spec = RunSpec.from_recipe(recipe, "test-nan-loss", max_steps=1)
    with pytest.raises(
        NonFiniteLoss, match="loss is nan .* experience 'greater_than_4'.*lower the learning rate"
    ):
        run_experiment(spec, tmp_path, progress=False)
    run_dir = tmp_path / spec.run_name()
    results = read_results(run_dir)
    assert not results["finished"] and _rows_done(run_dir) == 1
    assert (run_dir / "checkpoint-1" / "stage.json").is_file()


def test_atomic_dir_publishes_whole_folders_only(tmp_path: Path) -> None:
    from cltune.utils import atomic_dir

    target = tmp_path / "cache" / "model"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-save")
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-written left
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("first")
    with atomic_dir(target) as tmp:  # another process finished first: its copy stays
        (tmp / "weights").write_text("second")
    assert (target / "weights").read_text() == "first" and list(target.parent.iterdir()) == [target]


def test_atomic_dir_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    from cltune.utils import atomic_dir

    target = tmp_path / "cache" / "model"
    writer = (
        "import sys, time\n"
        "from cltune.utils import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'weights').write_text('half')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(target)], stdout=subprocess.PIPE, text=True)
    orphan = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait()
    assert (orphan / "weights").is_file()  # SIGKILL: no clean-up ran
    busy = Path(tmp_path / "cache" / f".model.{os.getpid()}.live")  # a writer that is still alive
    busy.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("whole")
    assert sorted(p.name for p in target.parent.iterdir()) == [busy.name, "model"]
    assert (target / "weights").read_text() == "whole"
