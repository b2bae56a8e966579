"""The catalogue of bad inputs (docs/BAD_INPUTS.md): each case gives a message that names the problem
and the fix, and nothing already written is lost.

Most cases go through the Python API or ``cltune.cli.main`` in this process; a few run the real
``python -m cltune`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from PIL import Image

from cltune import distributed
from cltune.analysis import RunDirectoryError, load_run
from cltune.cli import main
from cltune.data.encode import ChatTemplateMissing
from cltune.data.recipe import load_stream, read_recipe
from cltune.data.task import Task
from cltune.experiment import RunSpec, run_experiment
from cltune.models.loading import load_model
from cltune.reports import write_report
from cltune.strategies.config import TrainConfig
from cltune.strategies.registry import build_preset

TASK = "[[tasks]]\nname = 'a'\nsource = 'digits'\n"


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def _cli_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cltune", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _cli(capsys, *args: str) -> str:
    """``cltune ARGS`` in this process: asserts the usage-error exit code, returns stderr."""
    assert main(list(args)) == 2
    error = capsys.readouterr().err
    assert error.startswith("cltune: error: ")
    return error


# --- recipes -----------------------------------------------------------------------------------


def test_malformed_toml_through_the_cli(tmp_path):
    recipe = _recipe(tmp_path, "name = 'x'\n[[tasks]\nname = 'a'\n")
    proc = _cli_subprocess("run", str(recipe), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{recipe}: malformed TOML" in proc.stderr and "line 2" in proc.stderr
    assert "fix the syntax at that line" in proc.stderr


@pytest.mark.parametrize(
    ("text", "problem", "fix"),
    [
        (
            TASK + "qestion_type = 'parity'\n",
            "unknown key in .*#1 \\(a\\).*'qestion_type'",
            "Did you mean 'question_type'",
        ),
        ("strategies = 1\n" + TASK, "unknown key in .*'strategies'", "Did you mean 'strategy'"),
        (
            "[defaults]\ntrian_size = 5\n" + TASK,
            "unknown key in .*\\[defaults\\].*'trian_size'",
            "Did you mean 'train_size'",
        ),
        (TASK + "train_size = 'many'\n", "#1 \\(a\\): train_size", "must be an integer, got 'many'"),
        ("seed = 'zero'\n" + TASK, "seed", "must be an integer, got 'zero'"),
        (TASK + "test_size = 0\n", "test_size", "must be at least 1, got 0"),
        (TASK + "train_size = -5\n", "train_size", "must be at least 1, got -5"),
        ("name = 'x'\n", "the stream has no tasks", "add at least one \\[\\[tasks\\]\\] table"),
    ],
)
def test_recipe_errors(tmp_path, text, problem, fix):
    with pytest.raises(ValueError, match=f"{problem}.*{fix}"):
        read_recipe(_recipe(tmp_path, text))


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("lr = 'fast'", "training option lr must be a number, got 'fast'"),
        ("epochs = '2'", "training option epochs must be a positive integer, got '2'"),
        ("batch_size = 0", "training option batch_size must be a positive integer, got 0"),
        ("max_grad_norm = -1.0", "max_grad_norm > 0 \\(or None\\), got 0.0 and -1.0"),
        ("scope = 3", "training option scope must be a string, got 3"),
        ("epoch = 2", "unknown training option 'epoch'. Did you mean 'epochs'"),
    ],
)
def test_training_option_errors(tmp_path, train, message):
    recipe = _recipe(tmp_path, f"{TASK}[train]\n{train}\n")
    with pytest.raises(ValueError, match=message):
        RunSpec.from_recipe(recipe, "naive")


def test_a_task_with_fewer_samples_than_asked(tmp_path):
    recipe = _recipe(tmp_path, TASK + "question_type = 'parity'\ntrain_size = 5000\n")
    with pytest.raises(ValueError) as error:
        load_stream(recipe)
    message = str(error.value)
    assert message.startswith("task 'a' (train split): digits/train: asked for 5000 samples but only")
    assert "lower the size (the recipe's train_size or test_size) to at most 1348" in message


# --- LLaVA-JSON data and images ----------------------------------------------------------------


def _llava(tmp_path: Path, records: object) -> Path:
    Image.new("RGB", (16, 16), "red").save(tmp_path / "red.png")
    (tmp_path / "data.json").write_text(json.dumps(records))
    recipe = tmp_path / "llava.toml"
    data = tmp_path / "data.json"
    recipe.write_text(
        f"[[tasks]]\nname = 'mine'\nsource = 'llava_json'\ntrain_file = '{data}'\ntest_file = '{data}'\n"
    )
    return recipe


def _record(
    image: str | None = "red.png", question: str = "<image>\nWhat colour?", answer: bool = True
) -> dict:
    turns = [{"from": "human", "value": question}] + ([{"from": "gpt", "value": "red"}] if answer else [])
    return {"id": "r1", **({"image": image} if image else {}), "conversations": turns}


@pytest.mark.parametrize(
    ("record", "error", "problem", "fix"),
    [
        (
            _record(question="What colour?"),
            ValueError,
            "record 0 \\(id r1\\): the record has an image but no human turn contains '<image>'",
            "put '<image>' where the image goes",
        ),
        (
            _record(answer=False),
            ValueError,
            "record 0 \\(id r1\\): human turn 0 has no answer turn after it",
            'add a {"from": "gpt"',
        ),
        (
            _record(image="blue.png"),
            FileNotFoundError,
            "record 0 \\(id r1\\): image '.*blue.png' does not exist",
            "set image_folder to the folder",
        ),
    ],
)
def test_llava_json_record_errors(tmp_path, record, error, problem, fix):
    with pytest.raises(error, match=f"task 'mine' \\(train split\\): .*data.json {problem}.*{fix}"):
        load_stream(_llava(tmp_path, [record]))


def test_corrupt_image_file(tmp_path):
    recipe = _llava(tmp_path, [_record()])
    (tmp_path / "red.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(
        ValueError, match="image '.*red.png' is not a readable image .*replace the file or remove its record"
    ):
        load_stream(recipe)
    Image.new("RGB", (64, 64), "red").save(tmp_path / "red.png")
    (tmp_path / "red.png").write_bytes((tmp_path / "red.png").read_bytes()[:60])  # truncated
    with pytest.raises(ValueError, match="red.png' is not a readable image"):
        load_stream(recipe)


def test_empty_datasets(tmp_path):
    with pytest.raises(ValueError, match="data.json holds no examples; it needs at least one LLaVA record"):
        load_stream(_llava(tmp_path, []))
    empty = datasets.Dataset.from_dict({"question": [], "answer": []})
    empty.save_to_disk(str(tmp_path / "empty"))
    recipe = _recipe(
        tmp_path,
        f"[[tasks]]\nname = 'e'\nsource = 'hf'\npath = '{tmp_path / 'empty'}'\n"
        "question = 'q?'\ntest_split = 'train'\n",
    )
    with pytest.raises(
        ValueError,
        match="task 'e' \\(train split\\): hf dataset .*empty.* is empty \\(no rows to load\\); give it rows",
    ):
        load_stream(recipe)
    one = datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    with pytest.raises(ValueError, match="task 't' has an empty test split: give it test samples"):
        Task("t", one, empty)


# --- models, strategies, output folders --------------------------------------------------------


def test_a_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="model folder '.*no-model' does not exist; give a folder written by save_pretrained, "
        "a Hub id, or a built-in model \\(tiny",
    ):
        load_model(str(tmp_path / "no-model"))


@pytest.fixture(scope="module")
def small(small_recipe) -> Path:
    return small_recipe


@pytest.fixture(scope="module")
def finished_run(small, tmp_path_factory, tiny_cached) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return run_experiment(RunSpec.from_recipe(small, "naive", max_steps=1), out, progress=False).run_dir


def test_a_model_without_a_chat_template_leaves_no_run_behind(tmp_path, small, tiny):
    model, processor = tiny
    processor.chat_template = processor.tokenizer.chat_template = None
    folder = tmp_path / "plain-model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    spec = RunSpec.from_recipe(small, "naive", model=str(folder), max_steps=1)
    with pytest.raises(
        ChatTemplateMissing,
        match="has no chat template, so prompts cannot be built; .*put a chat_template.jinja file",
    ):
        run_experiment(spec, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / spec.run_name() / "config.json").exists()  # a fixed run may start


def test_unknown_strategy(capsys):
    error = _cli(capsys, "run", "--strategies", "naive,ewk")
    assert "unknown strategy 'ewk'. Did you mean 'ewc'?" in error and "Known: " in error


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        ("replay", {"buffer_size": -1}, "replay: buffer_size and replay_batch_size must be positive, got -1"),
        ("lora", {"r": 0}, "lora: r must be a positive integer, got 0"),
        ("wise-ft", {"alpha": 1.5}, "wise-ft: alpha must lie in \\[0, 1\\]"),
        ("ewc", {"strength": -2.0}, "ewc: strength must be a finite number >= 0, got -2.0"),
        (
            "replay",
            {"buffer_size": "many"},
            "parameter buffer_size of strategy 'replay' must be of type int, got 'many'",
        ),
        (
            "replay",
            {"bufer_size": 5},
            "unknown parameter of strategy 'replay': 'bufer_size'. Did you mean 'buffer_size'",
        ),
    ],
)
def test_strategy_parameters_out_of_range(strategy, params, message):
    with pytest.raises(ValueError, match=message):
        build_preset(strategy, **params)


def test_bad_strategy_parameters_are_refused_before_any_work(capsys, tmp_path):
    error = _cli(
        capsys,
        "run",
        "--strategies",
        "naive,replay",
        "--param",
        "replay.buffer_size=0",
        "--out",
        str(tmp_path / "runs"),
    )
    assert "replay: buffer_size and replay_batch_size must be positive, got 0" in error
    assert not (tmp_path / "runs").exists()  # not even the naive run was started


def test_bad_strategy_parameters_leave_no_run_directory(small, tmp_path):
    spec = RunSpec.from_recipe(small, "replay", params={"buffer_size": 0})
    with pytest.raises(ValueError, match="buffer_size"):
        run_experiment(spec, tmp_path, progress=False)
    assert not (tmp_path / spec.run_name()).exists()


def test_an_output_folder_that_cannot_be_written(capsys, tmp_path, small, finished_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    error = _cli(capsys, "run", "--strategies", "naive", "--out", str(blocker))
    assert f"cannot write to the output folder '{blocker}': it is a file, not a folder" in error
    assert "choose a writable --out folder" in error
    spec = RunSpec.from_recipe(small, "naive", max_steps=1)
    with pytest.raises(
        OSError, match=f"cannot write to the output folder '{blocker / 'sub'}'.*choose a writable --out"
    ):
        run_experiment(spec, blocker / "sub", progress=False)
    assert blocker.read_text() == "not a folder"
    error = _cli(capsys, "report", str(finished_run), "--out", str(blocker))
    assert f"cannot write to the report folder '{blocker}': it is a file" in error
    assert "choose a writable --out" in error
    assert blocker.read_text() == "not a folder"


def test_launcher_accelerate_without_accelerate_configured(small, tmp_path):
    """A real subprocess with an empty ``HF_HOME``: accelerate finds no default config file there."""
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "cltune", "run", str(small), "--out", str(out), "--launcher", "accelerate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf-home")},
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = tmp_path / "hf-home" / "accelerate" / "default_config.yaml"
    assert f"accelerate is not configured (no config file at {expected})" in proc.stderr
    assert "run `accelerate config` to write one, or pass --num-processes N" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--launcher", "acelerate"],
            "unknown launcher 'acelerate'. Did you mean 'accelerate'? Known: accelerate, none",
        ),
        (["--num-processes", "2"], "--num-processes needs --launcher accelerate"),
        (
            ["--launcher", "accelerate", "--num-processes", "0"],
            "--num-processes must be a positive integer, got 0",
        ),
    ],
)
def test_launcher_errors(capsys, small, tmp_path, args, message):
    out = tmp_path / "runs"
    error = _cli(capsys, "run", str(small), "--out", str(out), *args)
    assert message in error
    assert not out.exists()


def test_accelerate_mixed_precision_is_refused(monkeypatch):
    """What ``accelerate launch --mixed_precision bf16`` puts in each process's environment."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError) as err:
        distributed.init("cpu")
    message = str(err.value)
    assert "asks for mixed_precision='bf16'; cltune sets precision itself" in message
    assert "set mixed_precision: 'no' in the accelerate config and pass --set precision=bf16" in message


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharded_accelerate_configurations_are_refused_on_the_cpu(monkeypatch, kind):
    """What ``accelerate launch`` puts in each process's environment for an FSDP or DeepSpeed config:
    on the CPU accelerate would set up plain DDP, so cltune refuses rather than pretend."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(f"ACCELERATE_USE_{kind}", "true")
    with pytest.raises(ValueError) as err:
        distributed.init("cpu")
    message = str(err.value)
    assert f"accelerate runs {kind} only on GPUs" in message
    assert "use DDP (--launcher accelerate --num-processes N" in message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "cltune runs FSDP2 only"),
        ({"ACCELERATE_USE_MEGATRON_LM": "true"}, "distributed_type MEGATRON_LM is not supported by cltune"),
    ],
)
def test_fsdp1_and_megatron_are_refused(monkeypatch, env, message):
    """Refused from the launch environment before an ``Accelerator`` (or a GPU) is needed."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        distributed.init("cuda")


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_full_parameter_strategies_are_refused_when_sharded(monkeypatch, kind):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(f"ACCELERATE_USE_{kind}", "true")
    with pytest.raises(ValueError) as err:
        distributed.check_strategy("gmt", build_preset("gmt").plugins, TrainConfig())
    message = str(err.value)
    assert f"strategy 'gmt' cannot run under {kind}" in message
    assert "ImportanceMaskPlugin: it chooses masks over whole parameters" in message
    assert f"under {kind} run one of the strategies that `cltune list` names as running sharded" in message
    assert "examples/accelerate/ddp.yaml" in message
    for name in ("naive", "replay", "lora"):  # no error
        distributed.check_strategy(name, build_preset(name).plugins, TrainConfig())


def test_deepspeed_refuses_gradient_accumulation(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match=r"grad_accum=2 under DeepSpeed.*set --set grad_accum=1"):
        distributed.check_strategy("naive", [], TrainConfig(grad_accum=2))


# --- run directories and reports ---------------------------------------------------------------


def _damaged_copy(run_dir: Path, folder: Path, file: str, change) -> Path:
    copy = folder / run_dir.name
    shutil.copytree(run_dir, copy)
    data = json.loads((copy / file).read_text())
    change(data)
    (copy / file).write_text(json.dumps(data))
    return copy


def test_a_damaged_results_json_given_to_report_keeps_the_old_report(finished_run, tmp_path):
    report = tmp_path / "report"
    write_report([finished_run], report)
    before = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    damaged = _damaged_copy(finished_run, tmp_path, "results.json", lambda r: r["matrix"].pop("values"))
    proc = _cli_subprocess("report", str(damaged), "--out", str(report), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"run {damaged}: results.json is damaged (no 'matrix.values' field)" in proc.stderr
    assert "restore the file, or delete the run directory and run it again" in proc.stderr
    assert {p: p.read_bytes() for p in report.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "results.json",
            lambda r: r["matrix"].update(values="lots"),
            "results.json is damaged \\('matrix.values' should be of type list, got str\\)",
        ),
        (
            "results.json",
            lambda r: r.update(finished="yes"),
            "results.json is damaged \\('finished' should be of type bool",
        ),
        (
            "results.json",
            lambda r: r["matrix"]["values"][1].append(3.0),
            "results.json has a damaged accuracy matrix",
        ),
        (
            "config.json",
            lambda c: c["train"].pop("seed"),
            "config.json is damaged \\(no 'train.seed' field\\)",
        ),
        (
            "config.json",
            lambda c: c.update(stream=[]),
            "config.json is damaged \\('stream' should be of type dict",
        ),
    ],
)
def test_run_directory_files_are_checked_against_their_schema(finished_run, tmp_path, file, change, message):
    damaged = _damaged_copy(finished_run, tmp_path, file, change)
    with pytest.raises(RunDirectoryError, match=f"run {damaged}: {message}.*restore the file"):
        load_run(damaged)


def test_resuming_a_run_with_a_damaged_results_json_names_the_file(small, finished_run, tmp_path):
    damaged = _damaged_copy(finished_run, tmp_path, "results.json", lambda r: r.pop("timings"))
    spec = RunSpec.from_recipe(small, "naive", max_steps=1)
    with pytest.raises(RunDirectoryError, match="results.json is damaged \\(no 'timings' field\\)"):
        run_experiment(spec, tmp_path, progress=False)
    assert "timings" not in json.loads((damaged / "results.json").read_text())  # left as it was
