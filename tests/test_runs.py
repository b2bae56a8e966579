"""Reading run directories: validation with clear errors, and tables across strategies and seeds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from report_runs import SEEDS, STRATEGIES, cli_runs, copy_run, other_stream_run, run_dir
from scipy import stats

from cltune.analysis import (
    RunDirectoryError,
    StreamMismatchError,
    aggregate,
    cl_metrics,
    compare_runs,
    find_runs,
    load_run,
)
from cltune.cli import main

pytestmark = pytest.mark.slow  # the shared runs take about a minute to make, once per session


def test_load_run_reads_a_real_run():
    run = load_run(run_dir("naive", 1))
    assert (run.stream, run.strategy, run.seed, run.model, run.finished) == (
        "small",
        "naive",
        1,
        "tiny",
        True,
    )
    assert run.matrix.tasks == ["parity", "greater_than_4"] and run.matrix.general == ["digit"]
    assert run.matrix.values.shape == (3, 3)
    assert run.metrics == cl_metrics(run.matrix)
    for key, value in run.results["summary"].items():  # what the experiment computed when it finished
        assert run.metrics[key] == pytest.approx(value)
    assert run.checkpoint().name == "checkpoint-2"
    assert any(name.endswith("self_attn.q_proj.weight") for name in run.trained_params())
    assert load_run(run_dir("lora", 0)).label == "lora"


def test_find_runs_expands_an_out_folder():
    out, _ = cli_runs()
    found = find_runs([out, run_dir("naive", 0)])  # a run named twice is listed once
    assert [p.name for p in found] == sorted(f"small-{s}-seed{k}" for s in STRATEGIES for k in SEEDS)


def test_compare_runs_aggregates_seeds_and_pairs_them():
    comparison = compare_runs([run_dir(strategy, seed) for seed in SEEDS for strategy in STRATEGIES])
    assert comparison.stream == "small" and comparison.several_seeds
    assert comparison.labels == list(STRATEGIES)  # in the order given

    naive = [load_run(run_dir("naive", s)).metrics["mfn"] for s in SEEDS]
    row = comparison.summary().set_index(["label", "metric"]).loc[("naive", "mfn")]
    half = stats.t.ppf(0.975, df=1) * np.std(naive, ddof=1) / np.sqrt(2)
    assert (row["mean"], row["n"]) == (pytest.approx(np.mean(naive)), 2)
    assert row["ci_high"] - row["mean"] == pytest.approx(half)
    assert tuple(row[["mean", "ci_low", "ci_high", "n"]]) == pytest.approx(tuple(aggregate(naive)))

    table = comparison.table()
    assert np.isnan(table.loc["joint", "bwt"])  # a joint run has no sequential stages
    assert comparison.best()["mfn"] == [table["mfn"].idxmax()]

    lora = [load_run(run_dir("lora", s)).metrics["mfn"] for s in SEEDS]
    paired = comparison.paired(["mfn"]).set_index(["a", "b"]).loc[("naive", "lora")]
    assert paired["n_pairs"] == 2
    assert paired["mean_difference"] == pytest.approx(np.mean(np.subtract(naive, lora)))

    mean = comparison.mean_matrix("naive")
    np.testing.assert_allclose(
        mean.values, np.mean([load_run(run_dir("naive", s)).matrix.values for s in SEEDS], axis=0)
    )


def _damaged_copy(tmp_path, edit) -> str:
    run = copy_run(run_dir("naive", 0), tmp_path / "small-naive-seed0", analysis=False)
    edit(run)
    return run


def _edit_results(change):
    def edit(run):
        results = json.loads((run / "results.json").read_text())
        change(results)
        (run / "results.json").write_text(json.dumps(results))

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda run: shutil.rmtree(run), "the directory does not exist"),
        (lambda run: (run / "config.json").unlink(), "config.json is missing; this is not a run directory"),
        (lambda run: (run / "results.json").unlink(), "results.json is missing; .*resume"),
        (lambda run: (run / "results.json").write_text('{"schema": "cltune.res'), "results.json is damaged"),
        (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json is damaged"),
        (
            _edit_results(lambda r: r.update(schema="other/9")),
            "schema 'other/9', expected 'cltune.results/1'",
        ),
        (_edit_results(lambda r: r.pop("seed")), "results.json is damaged \\(no 'seed' field\\)"),
        (_edit_results(lambda r: r.update(seed="0")), "'seed' should be of type int"),
        (_edit_results(lambda r: r["matrix"]["values"][1].pop()), "damaged accuracy matrix"),
        (_edit_results(lambda r: r["matrix"]["values"][1].__setitem__(0, 250.0)), "outside 0–100"),
        (_edit_results(lambda r: r.update(strategy="lora")), "does not match config.json"),
        (_edit_results(lambda r: r["matrix"].update(tasks=["b", "a"])), "config.json's stream has"),
    ],
)
def test_a_damaged_run_directory_is_a_clear_error(tmp_path, edit, message):
    run = _damaged_copy(tmp_path, edit)
    with pytest.raises(RunDirectoryError, match=message) as error:
        load_run(run)
    assert str(run) in str(error.value)  # the error names the run


def test_bad_paths_and_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirectoryError, match="holds no run directories"):
        find_runs([tmp_path / "empty"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunDirectoryError, match="not a directory"):
        load_run(tmp_path / "file.txt")
    with pytest.raises(RunDirectoryError, match="does not exist"):
        find_runs([tmp_path / "nowhere"])


def test_compare_refuses_unfinished_duplicate_and_foreign_runs(tmp_path):
    unfinished = _damaged_copy(tmp_path, _edit_results(lambda r: r.update(finished=False)))
    with pytest.raises(RunDirectoryError, match=f"run {unfinished}: not finished"):
        compare_runs([run_dir("lora", 0), unfinished])

    duplicate = copy_run(run_dir("lora", 0), tmp_path / "again" / "small-lora-seed0")
    with pytest.raises(RunDirectoryError, match="are both lora on tiny with seed 0"):
        compare_runs([run_dir("lora", 0), duplicate])

    other = other_stream_run()
    with pytest.raises(StreamMismatchError, match="runs of different streams cannot be compared") as error:
        compare_runs([run_dir("naive", 0), other])
    assert str(other) in str(error.value) and "'other'" in str(error.value) and "'small'" in str(error.value)

    def other_recipe(run):
        config = json.loads((run / "config.json").read_text())
        config["stream"]["tasks"][0]["train_size"] = 40
        (run / "config.json").write_text(json.dumps(config))

    changed = copy_run(run_dir("naive", 1), tmp_path / "changed")
    other_recipe(changed)
    with pytest.raises(StreamMismatchError, match="their recipes differ in tasks"):
        compare_runs([run_dir("naive", 0), changed])


def test_cli_report_names_the_bad_run(tmp_path, capsys):
    other = other_stream_run()
    assert main(["report", str(run_dir("naive", 0)), str(other), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cltune: error: runs of different streams") and str(other) in error
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "nowhere: the directory does not exist" in capsys.readouterr().err
