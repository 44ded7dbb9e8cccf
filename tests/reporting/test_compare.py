"""``minc-keras compare``: the runs side by side, printed, as CSV and as a bar chart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.reporting.compare import comparison_table, format_table


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs of the workshop's model_0_0 and model_1_0 on the same data."""
    root = tmp_path_factory.mktemp("compare")
    source = write_dataset(root / "source", n_subjects=6)
    targets = []
    for model in ("model_0_0", "model_1_0"):
        target = root / model
        assert main(["--source", str(source), "--target", str(target), "--input-str",
                     "T1w_anat", "--label-str", "seg", "--epochs", "1", "--batch-size", "8",
                     "--lr", "5e-3", "--model-type", model,
                     "--class-names", "background,shell,core", "--quiet"]) == 0
        targets.append(target)
    return targets


def test_compare_prints_writes_and_draws(runs, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["compare", *map(str, runs), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["run", "model", "parameters", "epochs", "test_loss",
                                "test_accuracy", "dice_shell", "dice_core", "training_min",
                                "inference_s_per_volume"]
    assert lines[1].split()[:4] == ["model_0_0", "model_0_0", "71,987", "1"]
    assert lines[2].split()[:4] == ["model_1_0", "model_1_0", "192,211", "1"]
    assert f"wrote {output / 'compare.csv'}" in out

    table = pd.read_csv(output / "compare.csv")
    assert list(table["run"]) == ["model_0_0", "model_1_0"]
    assert list(table["model"]) == ["model_0_0", "model_1_0"]
    assert list(table["parameters"]) == [71987, 192211]
    assert list(table["epochs"]) == [1, 1]
    for column in ("test_accuracy", "dice_shell", "dice_core"):
        assert table[column].between(0, 1).all(), column
    for column in ("test_loss", "training_min", "inference_s_per_volume"):
        assert (table[column] > 0).all(), column

    png = output / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert min(image.size) > 300


def test_compare_shows_the_numbers_of_summary_json(runs, tmp_path, capsys):
    """Each number of compare.csv and of the printed table is the run's own, by value."""
    output = tmp_path / "out"
    assert main(["compare", *map(str, runs), "-o", str(output)]) == 0
    printed = capsys.readouterr().out.splitlines()[1:3]
    table = pd.read_csv(output / "compare.csv")
    for row, run, line in zip(table.to_dict("records"), runs, printed, strict=True):
        summary = json.loads((run / "report" / "summary.json").read_text())
        history = json.loads((run / "model" / "history.json").read_text())
        metrics = pd.read_csv(run / "report" / "metrics.csv")
        expected = {"parameters": summary["parameters"], "epochs": len(history["loss"]),
                    "test_loss": summary["test_loss"],
                    "test_accuracy": summary["test_accuracy"],
                    **{f"dice_{name}": summary["mean_dice"][name] for name in ("shell", "core")},
                    "training_min": summary["training_seconds"] / 60,
                    "inference_s_per_volume": summary["inference_seconds_per_volume"]}
        for name in ("shell", "core"):  # the mean Dice is the test subjects' mean
            dice = metrics.loc[metrics["class_name"] == name, "dice"].mean()
            assert summary["mean_dice"][name] == pytest.approx(dice)
        for column, value in expected.items():  # the CSV keeps four decimals
            assert row[column] == pytest.approx(value, abs=6e-5), column
        decimals = {"test_loss": 4, "test_accuracy": 4, "dice_shell": 3, "dice_core": 3,
                    "training_min": 1, "inference_s_per_volume": 1}
        shown = dict(zip(["run", "model", "parameters", "epochs", *decimals], line.split(),
                         strict=True))
        assert shown["parameters"] == f"{expected['parameters']:,}"
        assert shown["epochs"] == str(expected["epochs"])
        for column, digits in decimals.items():
            assert shown[column] == f"{expected[column]:.{digits}f}", column


def test_training_time_of_views_sharing_one_network(tmp_path):
    """``--shared-views`` trains one network and keeps one progress file, not one per view."""
    from minc_keras.reporting.summary import training_seconds

    (tmp_path / "model" / "checkpoints").mkdir(parents=True)
    (tmp_path / "model" / "config.json").write_text(json.dumps(
        {"views": ["axial", "coronal", "sagittal"], "shared_views": True}))
    (tmp_path / "model" / "checkpoints" / "state.json").write_text(json.dumps(
        {"epochs_done": 3, "seconds": 90.0, "complete": True}))
    assert training_seconds(tmp_path) == 90.0
    (tmp_path / "model" / "config.json").write_text(json.dumps(
        {"views": ["axial", "coronal"], "shared_views": False}))
    assert training_seconds(tmp_path) is None  # a view's file is missing: not known
    (tmp_path / "model" / "checkpoints" / "state_coronal.json").write_text(json.dumps(
        {"epochs_done": 3, "seconds": 30.0, "complete": True}))
    assert training_seconds(tmp_path) == 120.0


def test_optional_pieces_show_as_a_dash(runs, tmp_path):
    """A run evaluated by an older minc-keras has no summary.json: its numbers are "-"."""
    old = tmp_path / "old"
    for piece in ("model/config.json", "report/metrics.csv"):
        (old / piece).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(runs[0] / piece, old / piece)
    table = comparison_table([runs[0], old])
    assert table.loc[1, "model"] == "model_0_0"  # from model/config.json
    assert table.loc[1, ["parameters", "epochs", "test_accuracy", "training_min"]].isna().all()
    np.testing.assert_allclose(table.loc[1, ["dice_shell", "dice_core"]].astype(float),
                               table.loc[0, ["dice_shell", "dice_core"]].astype(float))
    row = format_table(table).splitlines()[2].split()
    assert row[:4] == ["old", "model_0_0", "-", "-"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "is not a folder"),
    (lambda p: p.mkdir(), "holds no trained run (no model/config.json)"),
    (lambda p: (p / "model").mkdir(parents=True) or (p / "model" / "config.json").write_text("{}"),
     "has not been evaluated (no report/metrics.csv)"),
])
def test_a_folder_without_an_evaluated_run_is_a_clear_error(runs, tmp_path, capsys, make,
                                                              message):
    folder = tmp_path / "not-a-run"
    make(folder)
    assert main(["compare", str(runs[0]), str(folder), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"minc-keras: error: {folder} {message}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "compare.csv").exists()  # nothing written for a refused comparison
