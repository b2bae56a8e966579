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
    rows = re.findall(r"^\| (\d) \| [\d.]+M \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", report, re.M)
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
