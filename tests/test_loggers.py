"""Loggers as plugins on a real run of the tiny LLaVA: the TensorBoard event files, the CSV files
and the offline W&B run file are read back and hold the train losses, the accuracy rows and the
summary metrics of the run; unknown names and missing packages are clear errors."""

from __future__ import annotations

import csv
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import wandb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from cltune.analysis import cl_metrics
from cltune.data.encode import Encoder
from cltune.data.recipe import build_stream, read_recipe
from cltune.evaluation.evaluator import evaluate
from cltune.loggers import MissingLoggerPackage, RunLogger, build_loggers, check_loggers
from cltune.matrix import AccuracyMatrix
from cltune.models.loading import load_model
from cltune.models.scopes import set_trainable
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.strategies.template import Template


class LossRecorder(Plugin):
    """The losses the template computed, to compare with what the loggers wrote."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_training_iteration(self, strategy) -> None:
        self.losses.append(float(strategy.loss.detach()))


def run_with_loggers(stream, loggers: list[RunLogger], recorder: LossRecorder) -> AccuracyMatrix:
    """Train and evaluate as a run does, giving the loggers each accuracy row and the summary."""
    model, processor = load_model("tiny", pretrain_tasks=stream.general, seed=stream.seed)
    encoder, config = Encoder(processor, "tiny"), TrainConfig(max_steps=2, batch_size=4, lr=5e-3)
    set_trainable(model, config.scope)
    template = Template(model, encoder, config, plugins=[recorder, *loggers], progress=False)
    tasks, rows = [*stream.tasks, *stream.general], []
    for stage in range(len(stream.tasks) + 1):
        if stage:
            template.train(Experience(stage, [stream.tasks[stage - 1]]))
        scores = evaluate(template, tasks, progress=False)
        rows.append([s.score for s in scores])
        for logger in loggers:
            logger.log_scores(stage, {s.task: s.score for s in scores})
    matrix = AccuracyMatrix(np.array(rows), stream.task_names, stream.general_names)
    for logger in loggers:
        logger.log_summary(cl_metrics(matrix))
        logger.close()
    return matrix


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, small_recipe, tiny_cached):
    """(run directory, matrix, summary, recorded losses) of a run with all three loggers."""
    run_dir = tmp_path_factory.mktemp("run") / "small-naive-seed0"
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_CONFIG_DIR": str(home),
            "WANDB_CACHE_DIR": str(home),
            "WANDB_DATA_DIR": str(home),
        }.items():
            patch.setenv(name, value)
        stream = build_stream(read_recipe(small_recipe))
        loggers = build_loggers(["tensorboard", "wandb", "csv"], run_dir, config={"strategy": "naive"})
        recorder = LossRecorder()
        matrix = run_with_loggers(stream, loggers, recorder)
        wandb.teardown()  # leave no W&B settings from this environment behind
    return run_dir, matrix, cl_metrics(matrix), recorder.losses


def _read_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file (W&B's LevelDB-style log of 32 KiB blocks)."""
    data, records, pending, pos = path.read_bytes(), [], b"", 7  # 7: the ':W&B' file header
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # the end, or a record still being written
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_wandb_run(folder: Path, timeout: float = 60.0) -> list:
    """The records of the one offline W&B run under ``folder``, once its ``exit`` record is on disk:
    W&B's own process writes the file and may still be flushing it when ``finish()`` returns."""
    (path,) = folder.glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = _read_records(path)
        if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_csv_files_hold_losses_rows_and_summary(logged_run) -> None:
    run_dir, matrix, summary, losses = logged_run
    with open(run_dir / "logs" / "train_loss.csv") as f:
        loss_rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in loss_rows] == list(range(1, len(losses) + 1))
    assert [int(r["experience"]) for r in loss_rows] == [1, 1, 2, 2]
    assert [float(r["loss"]) for r in loss_rows] == losses
    with open(run_dir / "logs" / "accuracy.csv") as f:
        accuracy = list(csv.reader(f))
    assert accuracy[0] == ["stage", *matrix.columns]
    np.testing.assert_array_equal(np.array(accuracy[1:], dtype=float)[:, 1:], matrix.values)
    assert [row[0] for row in accuracy[1:]] == ["0", "1", "2"]
    with open(run_dir / "logs" / "summary.csv") as f:
        written = {row["metric"]: float(row["value"]) for row in csv.DictReader(f)}
    assert written == {k: v for k, v in summary.items() if v is not None}


def test_tensorboard_events_hold_losses_rows_and_summary(logged_run) -> None:
    run_dir, matrix, summary, losses = logged_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, len(losses) + 1))
    np.testing.assert_allclose([e.value for e in loss], losses, rtol=1e-6)  # stored as float32
    for column, name in enumerate(matrix.columns):
        scalars = events.Scalars(f"accuracy/{name}")
        assert [e.step for e in scalars] == [0, 1, 2]
        np.testing.assert_allclose([e.value for e in scalars], matrix.values[:, column], rtol=1e-6)
    logged = {tag.removeprefix("summary/") for tag in events.Tags()["scalars"] if tag.startswith("summary/")}
    assert logged == {k for k, v in summary.items() if v is not None}
    assert events.Scalars("summary/mft")[0].value == pytest.approx(summary["mft"], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]


def test_offline_wandb_run_holds_losses_rows_and_summary(logged_run) -> None:
    run_dir, matrix, summary, losses = logged_run
    records = read_wandb_run(run_dir / "wandb")
    history = [
        {_key(i): json.loads(i.value_json) for i in r.history.item} for r in records if r.HasField("history")
    ]
    assert [h["train/loss"] for h in history if "train/loss" in h] == losses
    assert [h["train/step"] for h in history if "train/loss" in h] == list(range(1, len(losses) + 1))
    rows = [h for h in history if "stage" in h]
    assert [h["stage"] for h in rows] == [0, 1, 2]
    np.testing.assert_array_equal([[h[f"accuracy/{c}"] for c in matrix.columns] for h in rows], matrix.values)
    final: dict = {}
    for record in records:
        if record.HasField("summary"):
            final.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    for name, value in summary.items():
        if value is not None:
            assert final[name] == pytest.approx(value), name
    config = next(r.run.config for r in records if r.HasField("run"))
    assert {_key(i): json.loads(i.value_json) for i in config.update}["strategy"] == "naive"


def test_unknown_logger_name_suggests_the_close_one(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown logger 'tensorbord'. Did you mean 'tensorboard'"):
        build_loggers(["csv", "tensorbord"], tmp_path)
    assert not (tmp_path / "logs").exists()  # names are checked before any logger is made


@pytest.mark.parametrize(
    ("name", "module", "install"),
    [
        ("wandb", "wandb", "pip install wandb"),
        ("tensorboard", "torch.utils.tensorboard", "pip install tensorboard"),
    ],
)
def test_missing_package_is_an_error_naming_the_install(monkeypatch, tmp_path, name, module, install) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # how Python marks a module that cannot be imported
    with pytest.raises(MissingLoggerPackage, match=f"the '{name}' logger needs .*`{install}`"):
        build_loggers(["csv", name], tmp_path)
    assert not (tmp_path / "logs").exists()  # checked before the csv logger was made
    with pytest.raises(MissingLoggerPackage, match=install):
        check_loggers(f"csv,{name}")


def test_wandb_without_an_api_key_falls_back_to_offline_and_says_so(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("HOME", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home"))  # no netrc, no stored key
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    wandb.teardown()  # W&B keeps the settings it read from the environment until torn down
    (logger,) = build_loggers(["wandb"], tmp_path / "run")
    logger.log_scores(0, {"task": 50.0})
    logger.close()
    assert "logging offline to" in capsys.readouterr().err
    history = [r.history for r in read_wandb_run(tmp_path / "run" / "wandb") if r.HasField("history")]
    assert [{_key(i): json.loads(i.value_json) for i in h.item}["accuracy/task"] for h in history] == [50.0]


def test_a_run_with_loggers_from_the_recipe_or_the_cli_writes_what_results_json_holds(
    small_recipe, tmp_path, capsys
) -> None:
    from cltune.cli import main
    from cltune.experiment import RunSpec, run_experiment

    recipe = read_recipe(str(small_recipe))
    recipe["train"] = {"max_steps": 2, "batch_size": 4, "loggers": ["csv"]}
    spec = RunSpec.from_recipe(recipe, "naive")
    assert spec.loggers == ["csv"] and "loggers" not in spec.to_dict()["train"]
    result = run_experiment(spec, tmp_path / "runs", progress=False)
    logs = result.run_dir / "logs"
    with open(logs / "accuracy.csv") as f:
        rows = [[float(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert rows == result.matrix.values.tolist()
    with open(logs / "summary.csv") as f:
        summary = {name: float(value) for name, value in list(csv.reader(f))[1:]}
    assert summary == {k: v for k, v in result.metrics.items() if v is not None}
    with open(logs / "train_loss.csv") as f:
        steps = [int(row[0]) for row in list(csv.reader(f))[1:]]
    assert steps == list(range(1, 2 * len(recipe["tasks"]) + 1))  # max_steps 2 per experience
    assert main(["run", str(small_recipe), "--loggers", "tensorbord", "--out", str(tmp_path / "x")]) == 2
    assert "unknown logger 'tensorbord'. Did you mean 'tensorboard'?" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything is written
