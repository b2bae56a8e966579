"""The benchmark scripts still run end to end on a tiny configuration (their numbers are not checked:
timings belong in benchmarks/, never in tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, out: Path) -> str:
    command = [sys.executable, str(REPO / "benchmarks" / name), *args, "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text()


def test_merging_throughput_reports_every_method_against_the_copy(tmp_path: Path) -> None:
    methods = ["task_arithmetic", "ties", "dare_linear"]
    report = run_script(
        "merging_throughput.py",
        *("--tasks", "2,3", "--params", "0.26", "--repeats", "1", "--methods", ",".join(methods)),
        out=tmp_path / "merging.md",
    )
    number = r"([\d.]+(?:e[+-]\d+)?)"  # a ratio far below 1 prints in exponent notation
    rows = re.findall(rf"^\| (\d) \| [\d.]+M \| (\w+) \| {number} \| {number} \| {number} \|$", report, re.M)
    assert {(count, name) for count, name, *_ in rows} == {
        (count, name) for count in "23" for name in ["copy", *methods]
    }
    assert all(float(ratio) == 1.0 for _, name, _, _, ratio in rows if name == "copy")
    assert all(float(ratio) > 0 for *_, ratio in rows)


@pytest.mark.usefixtures("tiny_cached")
def test_selective_overhead_reports_ratios_to_naive(tmp_path: Path) -> None:
    report = run_script(
        "selective_overhead.py",
        *("--strategies", "naive,gmt", "--reps", "1", "--steps", "2", "--warmup", "1", "--rows", "32"),
        out=tmp_path / "selective.md",
    )
    assert re.search(r"^\| naive \|", report, re.M) and re.search(r"^\| gmt \|", report, re.M)


def table_rows(report: str, first: str) -> list[list[str]]:
    """The cells of the Markdown table rows whose first cell matches ``first`` (a regex)."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in report.splitlines()
        if re.match(rf"^\| ({first}) \|", line)
    ]


def ratio(cell: str) -> float:
    return float(cell.split("×")[0])


@pytest.mark.usefixtures("tiny_cached")
def test_training_overhead_compares_every_loop_with_the_bare_one(tmp_path: Path) -> None:
    report = run_script(
        "training_overhead.py",
        *("--reps", "1", "--steps", "3", "--warmup", "1"),
        out=tmp_path / "training.md",
    )
    rows = table_rows(report, r"bare|cltune|avalanche|hf-trainer")
    assert [row[0] for row in rows] == ["bare", "cltune", "avalanche", "hf-trainer"]
    assert all(ratio(row[1]) > 0 and ratio(row[2]) > 0 for row in rows)
    assert ratio(rows[0][1]) == 1.0
    # Same batches, seed and optimizer: the bare loop, cltune and Avalanche train the same weights.
    assert [row[5] for row in rows[:3]] == ["identical"] * 3
    assert "cltune / bare" in report and "cltune / avalanche" in report


@pytest.mark.usefixtures("tiny_cached")
def test_eval_throughput_reports_speed_and_identical_answers(tmp_path: Path) -> None:
    report = run_script(
        "eval_throughput.py", *("--reps", "1", "--rows", "6", "--batch-size", "4"), out=tmp_path / "eval.md"
    )
    rows = table_rows(report, r"cltune|raw-batched|batch-1")
    assert [row[0] for row in rows] == ["cltune", "raw-batched", "batch-1"]
    assert all(ratio(row[4]) > 0 for row in rows)
    # Greedy answers do not depend on the batching: every loop answers every row as cltune does.
    assert [row[5] for row in rows] == ["24 / 24"] * 3
    assert re.search(r"Reuse fingerprint: [\d.]+ ms for a task alone, [\d.]+ ms per task in a pass", report)


@pytest.mark.usefixtures("tiny_cached")
def test_scaling_counts_fewer_evaluations_under_isolation(tmp_path: Path) -> None:
    report = run_script(
        "scaling.py",
        *("--tasks", "1,2", "--train-size", "16", "--test-size", "4"),
        out=tmp_path / "scaling.md",
    )
    rows = {(row[0], row[1]): row for row in table_rows(report, r"\d+")}
    assert set(rows) == {
        (t, s) for t in "12" for s in ["naive", "lora-isolation", "lora-isolation (no reuse)"]
    }
    assert rows[("2", "naive")][6] == "6 / 6" and rows[("2", "lora-isolation (no reuse)")][6] == "6 / 6"
    assert rows[("2", "lora-isolation")][6] == "4 / 6"
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows.values())


@pytest.mark.usefixtures("tiny_cached")
def test_end_to_end_splits_the_run_into_phases(tmp_path: Path, small_recipe: Path) -> None:
    extra = f"{small_recipe} --strategies naive --analyze none"
    report = run_script("end_to_end.py", "--cached", "--args", extra, out=tmp_path / "e2e.md")
    phases = {row[0]: float(row[1]) for row in table_rows(report, r"(?!phase )[a-z][^|]*")}
    assert {"training", "evaluation", "analyses", "report", "pre-training + loading the model"} <= set(phases)
    assert phases["training"] > 0 and phases["evaluation"] > 0
    total = float(re.search(r"\*\*total\*\* \| \*\*([\d.]+)\*\*", report).group(1))
    assert sum(phases.values()) == pytest.approx(total, abs=0.5)


@pytest.mark.usefixtures("tiny_cached")
def test_feature_cache_benchmark_compares_the_memo_on_and_off(tmp_path: Path) -> None:
    report = run_script(
        "feature_cache.py",
        *("--reps", "1", "--rows", "6", "--train-rows", "16", "--epochs", "2"),
        out=tmp_path / "memo.md",
    )
    rows = table_rows(report, r"evaluation[^|]*|training[^|]*")
    assert len(rows) == 3 and all(ratio(row[3]) > 0 for row in rows)
    # The memo serves what the tower would compute: same answers, same trained weights.
    assert rows[0][4] == "answers identical" and rows[2][4] == "weights identical"
    assert re.search(r"The memo holds \d+ images", report)
