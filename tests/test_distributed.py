"""A real two-process DDP run on the CPU (gloo), through ``cltune run --launcher accelerate``.

The run is a real ``accelerate launch`` (torchrun) subprocess of a selective strategy (GMT) on the
tiny model and the small recipe. It checks that the run finishes, that only the main process wrote
the run directory, that both processes applied the same masks (each process's digest of its own
mask tensors, gathered into ``results.json``), and that sharded evaluation gives the answers of a
single-process evaluation of the same weights (the zero-shot row).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cltune.data.encode import Encoder
from cltune.data.recipe import build_stream
from cltune.evaluation.evaluator import evaluate
from cltune.experiment import RunSpec
from cltune.models.loading import load_model
from cltune.selective import load_masks
from cltune.strategies.plugins.masks import mask_digest
from cltune.strategies.template import Template

pytestmark = pytest.mark.slow

RUN = "small-gmt-seed0"
# Four evaluation batches per task, so each process answers two of them.
OPTIONS = ("--strategies", "gmt", "--set", "eval_batch_size=4", "--quiet", "--analyze", "none", "--no-report")


@pytest.fixture(scope="module")
def two_process_run(tiny_cached, small_recipe, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``cltune run --launcher accelerate --num-processes 2`` with no accelerate config file."""
    tmp = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp / "hf-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "cltune", "run", str(small_recipe), "--out", str(tmp / "out"), *OPTIONS]
        + ["--launcher", "accelerate", "--num-processes", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=600,
    )
    return proc, tmp / "out"


def test_two_processes_finish_with_a_full_matrix(two_process_run):
    proc, out = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / RUN / "results.json").read_text())
    values = results["matrix"]["values"]
    assert results["finished"] is True
    # rows: zero-shot and two stages; columns: two tasks and one general task
    assert len(values) == 3 and all(len(row) == 3 for row in values)
    assert all(v is not None and 0 <= v <= 100 for row in values for v in row)
    assert results["runtime"]["processes"] == 2 and results["runtime"]["distributed_type"] == "MULTI_CPU"


def test_only_the_main_process_writes(two_process_run):
    proc, out = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [RUN]
    events = [json.loads(line)["event"] for line in (out / RUN / "events.jsonl").read_text().splitlines()]
    assert events == ["start", "train", "stage_done", "train", "stage_done", "finished"]
    files = sorted(str(p.relative_to(out / RUN)) for p in (out / RUN).rglob("*") if p.is_file())
    assert files == [
        "analysis/masks-greater_than_4.safetensors",
        "analysis/masks-parity.safetensors",
        "checkpoint-2/params.safetensors",
        "checkpoint-2/plugins.json",
        "checkpoint-2/plugins.safetensors",
        "checkpoint-2/stage.json",
        "config.json",
        "events.jsonl",
        "predictions/stage-0.json",
        "predictions/stage-1.json",
        "predictions/stage-2.json",
        "results.json",
    ]
    assert proc.stdout.count(f"== {RUN}") == 1  # the other process prints nothing either


def test_both_processes_apply_the_same_masks(two_process_run):
    proc, out = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = json.loads((out / RUN / "results.json").read_text())["extra"]["masks"]
    assert set(masks) == {"parity", "greater_than_4"}
    for task, stats in masks.items():
        digests = stats["process_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]
        # The digest is that of the masks the main process saved, so it hashes real mask tensors.
        assert mask_digest(load_masks(out / RUN / "analysis" / f"masks-{task}.safetensors")) == digests[0]
    assert masks["parity"]["process_digests"] != masks["greater_than_4"]["process_digests"]


def test_sharded_evaluation_answers_as_one_process(two_process_run, small_recipe):
    proc, out = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = RunSpec.from_recipe(small_recipe, "gmt", eval_batch_size=4)
    stream = build_stream(spec.recipe)
    model, processor = load_model("tiny", pretrain_tasks=stream.general, seed=stream.seed)
    template = Template(model, Encoder(processor, "tiny"), spec.train, progress=False)
    single = {s.task: s.predictions for s in evaluate(template, [*stream.tasks, *stream.general], False)}
    sharded = json.loads((out / RUN / "predictions" / "stage-0.json").read_text())
    assert set(sharded) == {"parity", "greater_than_4", "digit"}
    assert sharded == single


@pytest.mark.parametrize("name", ["ddp", "ddp_two_machines", "fsdp", "deepspeed_zero2"])
def test_example_configurations_load(name):
    """Each example file is a valid accelerate 1.x configuration of the documented kind."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(
        str(Path(__file__).parents[1] / "examples" / "accelerate" / f"{name}.yaml")
    )
    kind = {"fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED"}.get(name, "MULTI_GPU")
    assert config.distributed_type.value == kind and config.mixed_precision == "no"
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2


def test_fsdp_launch_on_the_cpu_is_refused(small_recipe, tmp_path):
    """A real ``accelerate launch --use_fsdp`` of two CPU processes: accelerate would give DDP there,
    so each process stops before writing anything (the message names the reason and the fix)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf-home")}
    launch = ["--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "cltune", "run"]
        + [str(small_recipe), "--out", str(tmp_path / "out"), "--strategies", "naive", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "accelerate runs FSDP only on GPUs: on the CPU its Accelerator sets up plain DDP" in proc.stderr
    assert not (tmp_path / "out").exists()
