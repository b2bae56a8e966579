"""The run directory: plugin state without pickle, old pickled checkpoints refused, the finished-stage
count, the default report folder, atomic files and folders."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from cltune.matrix import AccuracyMatrix
from cltune.rundir import (
    RunDirectory,
    RunDirectoryError,
    default_report_dir,
    finished_stages,
)
from cltune.utils import atomic_path


def _matrix(values) -> AccuracyMatrix:
    return AccuracyMatrix(
        values=values, tasks=["a", "b"], general=[], stages=["zero-shot", "after a", "after b"]
    )


def test_plugin_state_round_trips_tensors_and_json_without_pickle(tmp_path):
    run = RunDirectory(tmp_path)
    masks = {
        "stats": {"a": {"density": 0.25, "jaccard_previous": None, "nan": math.nan}},
        "previous": {"w": (torch.tensor([3, 255], dtype=torch.uint8), [2, 8])},
    }
    penalty = {"terms": [({"w": torch.randn(2, 3)}, None)], "bf16": torch.ones(4, dtype=torch.bfloat16)}
    replay = {"buffer": {"a": [0, 5, 7]}, "flag": True, "name": "x"}
    params = {"layer.weight": torch.arange(6.0).reshape(2, 3)}
    run.save_checkpoint(1, params, [("MaskPlugin", masks), ("EWCPlugin", penalty), ("ReplayPlugin", replay)])
    assert {p.name for p in (tmp_path / "checkpoint-1").iterdir()} == {
        "params.safetensors",
        "plugins.json",
        "plugins.safetensors",
        "stage.json",
    }
    loaded, (m, p, r) = run.load_checkpoint(1)
    assert torch.equal(loaded["layer.weight"], params["layer.weight"])
    bits, shape = m["previous"]["w"]  # tuples stay tuples
    assert (
        isinstance(m["previous"]["w"], tuple)
        and torch.equal(bits, masks["previous"]["w"][0])
        and shape == [2, 8]
    )
    assert m["stats"]["a"]["jaccard_previous"] is None and math.isnan(m["stats"]["a"]["nan"])
    ((weights, none),) = p["terms"]
    assert none is None and torch.equal(weights["w"], penalty["terms"][0][0]["w"])
    assert p["bf16"].dtype == torch.bfloat16
    assert r == replay


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"seen": {1, 2}}, "state['seen'] is a set"),
        ({"by_index": {3: torch.zeros(1)}}, "key 3 is not a string"),
    ],
)
def test_a_plugin_state_that_is_neither_tensors_nor_json_is_refused_by_name(tmp_path, state, where):
    run = RunDirectory(tmp_path)
    with pytest.raises(TypeError, match=r"plugin OddPlugin: .* cannot be saved without pickle") as caught:
        run.save_checkpoint(1, {}, [("ReplayPlugin", {"buffer": {}}), ("OddPlugin", state)])
    assert where in str(caught.value)
    assert not (tmp_path / "checkpoint-1").exists()  # refused before anything is written


class _Payload:
    """Unpickling this creates a file: proof that a loader ran code from the run directory."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_old_pickled_checkpoint_is_refused_not_unpickled(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "code-ran"
    folder = run_dir / "checkpoint-1"
    folder.mkdir(parents=True)
    RunDirectory(tmp_path / "scratch").save_checkpoint(1, {"w": torch.zeros(2)}, [])
    (folder / "params.safetensors").write_bytes(
        (tmp_path / "scratch/checkpoint-1/params.safetensors").read_bytes()
    )
    (folder / "plugins.pt").write_bytes(pickle.dumps([_Payload(marker)]))
    (folder / "stage.json").write_text('{"stage": 1}')
    with pytest.raises(RunDirectoryError, match=r"plugins\.pt, a pickle .* does not unpickle .* again"):
        RunDirectory(run_dir).load_checkpoint(1)
    assert not marker.exists()


def test_finished_stages_counts_rows_with_any_value():
    nan = math.nan
    assert finished_stages(_matrix([[10, 20], [nan, nan], [nan, nan]])) == 0
    assert finished_stages(_matrix([[10, 20], [30, nan], [nan, nan]])) == 1  # a task that scored NaN
    assert finished_stages(_matrix([[10, 20], [30, 40], [50, 60]])) == 2


def test_the_default_report_folder_is_beside_the_runs(tmp_path):
    runs = [tmp_path / "out" / "a-naive-seed0", tmp_path / "out" / "a-lora-seed0"]
    assert default_report_dir(runs) == tmp_path / "out" / "report"
    assert default_report_dir([tmp_path / "x" / "r1", tmp_path / "y" / "r2"]) == tmp_path / "report"


def test_atomic_path_keeps_the_old_file_on_an_error(tmp_path):
    path = tmp_path / "masks-a.safetensors"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]
    RunDirectory(tmp_path).save_analysis("w.csv", lambda p: p.write_text("new"))
    assert (tmp_path / "analysis" / "w.csv").read_text() == "new"


def test_a_saved_adapter_folder_replaces_the_old_one_whole(tmp_path):
    run = RunDirectory(tmp_path)
    run.save_adapter("parity", lambda folder: (folder / "old.bin").write_text("1"))

    def half_written(folder: Path) -> None:
        (folder / "half.bin").write_text("2")
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        run.save_adapter("parity", half_written)
    assert [p.name for p in (tmp_path / "adapters" / "parity").iterdir()] == ["old.bin"]
    run.save_adapter("parity", lambda folder: (folder / "new.bin").write_text("3"))
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == ["parity"]  # no temporaries left
    assert [p.name for p in (tmp_path / "adapters" / "parity").iterdir()] == ["new.bin"]
