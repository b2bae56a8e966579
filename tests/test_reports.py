"""Reports of real runs: `cltune run --seeds` end to end, tables, figures, skips, `cltune analyze`."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_runs import SEEDS, STRATEGIES, cli_runs, copy_run, run_dir

from cltune.analysis import METRIC_DEFINITIONS, compare_runs, load_run, weight_drift
from cltune.cli import main
from cltune.data.recipe import build_stream
from cltune.models.loading import load_model
from cltune.reports import figures as matrix_figures
from cltune.reports import write_report
from cltune.reports.tables import METRIC_LABELS, metric_header

SHARED_RUNS = pytest.mark.slow  # the shared runs take about a minute to make, once per session

FIGURES = (
    "accuracy",
    "forgetting",
    "task_curves",
    "plane",
    "importance",
    "mask_overlap",
    "weight_drift",
    "representation",
)
NEEDS_ANALYSIS = ("importance", "mask_overlap", "weight_drift", "representation")


def _md_table(markdown: str, first_header: str) -> pd.DataFrame:
    """The Markdown table whose first header cell is ``first_header``, as strings."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return pd.DataFrame(rows[2:], columns=rows[0])


@SHARED_RUNS
def test_cltune_run_with_seeds_prints_the_aggregate_and_writes_the_report():
    out, printed = cli_runs()
    for strategy in STRATEGIES:
        row = next(line for line in printed.splitlines() if line.startswith(f"{strategy} "))
        assert " 0,1 " in row and "±" in row  # seeds listed, mean ± CI half-width
    report = out / "report"
    assert f"report: {report / 'report.html'} and {report / 'report.md'}" in printed
    for name in FIGURES:
        png = report / "figures" / f"{name}.png"
        assert png.is_file(), name
        assert Image.open(png).size[0] > 100
    metrics = pd.read_csv(report / "metrics.csv", index_col="run")
    assert len(metrics) == len(STRATEGIES) * len(SEEDS)
    assert metrics.loc["small-naive-seed1", "mfn"] == pytest.approx(
        load_run(run_dir("naive", 1)).metrics["mfn"]
    )


@SHARED_RUNS
def test_report_table_marks_the_best_and_defines_every_metric():
    markdown = (cli_runs()[0] / "report" / "report.md").read_text()
    table = _md_table(markdown, "strategy")
    comparison = compare_runs([run_dir(strategy, seed) for seed in SEEDS for strategy in STRATEGIES])
    means = comparison.table("mean")
    for metric, winners in comparison.best().items():
        column = metric_header(metric)
        if not winners:
            assert column not in table.columns  # undefined everywhere: left out, and said so
            continue
        bold = table.loc[table[column].str.startswith("**"), "strategy"].tolist()
        assert sorted(bold) == sorted(winners), metric
        best = means.loc[winners[0], metric]
        assert table.loc[table["strategy"] == winners[0], column].item().startswith(f"**{best:.1f} ± ")
    for text in METRIC_DEFINITIONS.values():
        assert text in markdown
    assert markdown.index("### Metric definitions") > markdown.index("| strategy |")

    paired = _md_table(markdown, "metric")
    row = paired[
        (paired["metric"] == METRIC_LABELS["mfn"]) & (paired["A"] == "naive") & (paired["B"] == "lora")
    ]
    expected = comparison.paired(["mfn"]).set_index(["a", "b"]).loc[("naive", "lora")]
    assert row["seeds"].item() == "2"
    assert row["mean A − B"].item() == f"{expected['mean_difference']:+.1f}"


@SHARED_RUNS
def test_html_report_is_self_contained_with_every_figure_embedded():
    page = (cli_runs()[0] / "report" / "report.html").read_text()
    assert not re.search(r'(?:src|href)="(?!data:)', page), "no external resource"
    assert "<script" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[1] > 100
    assert "Skipped:" not in page


@SHARED_RUNS
def test_report_without_analyses_skips_those_figures_with_a_note(tmp_path, capsys):
    for strategy in STRATEGIES:
        copy_run(run_dir(strategy, 0), tmp_path / "runs" / f"small-{strategy}-seed0", analysis=False)
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "importance.png").write_bytes(b"stale")  # from an earlier report
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--formats", "md"]) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    assert markdown.count("> Skipped:") == len(NEEDS_ANALYSIS)
    assert "cltune analyze RUN_DIR" in markdown
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").is_file() == (name not in NEEDS_ANALYSIS), name
    assert not (out / "report.html").exists()
    assert "±" not in markdown  # one seed: plain values
    assert "there is no paired test" in markdown


@SHARED_RUNS
def test_figures_that_do_not_apply_are_notes():
    joint_only = compare_runs([run_dir("joint", s) for s in SEEDS])
    assert "No run is sequential" in matrix_figures.forgetting_heatmaps(joint_only)
    assert "No run defines both" in matrix_figures.stability_plasticity(joint_only)
    assert not isinstance(matrix_figures.task_curves(joint_only), str)


@SHARED_RUNS
def test_write_report_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        write_report([run_dir("naive", 0)], tmp_path, formats=["md", "pdf"])


@SHARED_RUNS
def test_cltune_analyze_measures_drift_against_the_base_model(tmp_path, capsys):
    naive = copy_run(run_dir("naive", 0), tmp_path / "small-naive-seed0", analysis=False)
    lora = copy_run(run_dir("lora", 0), tmp_path / "small-lora-seed0", analysis=False)
    assert main(["analyze", str(naive), str(lora), "--analyze", "drift"]) == 0
    assert "analysed small-lora-seed0" in capsys.readouterr().out
    assert sorted(p.name for p in (naive / "analysis").iterdir()) == ["weight_drift.csv"]

    run = load_run(naive)
    stream = build_stream(run.recipe)
    base, _ = load_model("tiny", pretrain_tasks=stream.general, seed=stream.seed)
    direct = weight_drift(base, run.trained_params()).set_index("module")["relative"]
    saved = pd.read_csv(naive / "analysis" / "weight_drift.csv").set_index("module")["relative"]
    np.testing.assert_allclose(saved.loc[direct.index], direct, rtol=1e-6)
    assert (saved[saved.index.str.contains("vision_tower")] == 0).all()  # outside the trained scope

    frame = pd.read_csv(lora / "analysis" / "weight_drift.csv").set_index("module")
    linear = frame.index.str.contains(r"language_model\.layers\.\d+\.(?:self_attn|mlp)\.", regex=True)
    assert (frame.loc[linear, "relative"] > 0).all()  # every adapted linear layer moved (B A merged)
    assert (frame.loc[~linear, "relative"] == 0).all()  # norms, embeddings, vision tower, head: frozen


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0,x"], "--seeds '0,x': expected comma-separated integers"),
        (["--seeds", "0,1,0"], "a seed is repeated"),
        (["--strategies", "naive,lora,naive"], "naive given more than once"),
        (["--analyze", "drift,speed"], "unknown analysis 'speed'"),
        (["--method", "gradiant"], "unknown importance measure 'gradiant'"),
        (["--examples", "0"], "--examples must be a positive integer"),
    ],
)
def test_cltune_run_checks_its_options_before_any_work(args, message, capsys, tmp_path):
    assert main(["run", "--strategies", "naive", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was run
