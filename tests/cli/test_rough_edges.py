"""Rough edges a new user hit: a rerun demo, where compare writes, the classes in the log."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main

# -- demo: an earlier demo's outputs are not overwritten without --clobber ---------------


@pytest.fixture
def demo_calls(monkeypatch):
    """Replace the demo's data and run by recorders: what would the demo have done?"""
    import minc_keras.data.demo
    import minc_keras.workflows

    calls = []
    monkeypatch.setattr(minc_keras.data.demo, "make_demo_dataset",
                        lambda *a, **k: calls.append(("data", k.get("clobber"))))
    monkeypatch.setattr(minc_keras.workflows, "run_pipeline",
                        lambda *a, **k: calls.append(("run", k["control"].clobber)))
    return calls


@pytest.mark.parametrize("earlier", ["model/model.keras", "predict/test/sub-01_dseg.mnc"])
def test_a_second_demo_into_the_same_target_is_refused(tmp_path, capsys, demo_calls, earlier):
    target = tmp_path / "demo"
    (target / earlier).parent.mkdir(parents=True)
    (target / earlier).write_bytes(b"the first demo's")
    assert main(["demo", "--target", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"minc-keras: error: {target} holds an earlier demo's outputs")
    assert "--clobber" in err
    assert len(err.splitlines()) == 1
    assert demo_calls == []  # refused before anything was written
    assert (target / earlier).read_bytes() == b"the first demo's"
    assert not (target / "source").exists()


def test_demo_with_clobber_redoes_an_earlier_demo(tmp_path, capsys, demo_calls):
    target = tmp_path / "demo"
    (target / "predict" / "test").mkdir(parents=True)
    (target / "predict" / "test" / "sub-01_dseg.mnc").write_bytes(b"old")
    assert main(["demo", "--target", str(target), "--clobber"]) == 0
    assert demo_calls == [("data", True), ("run", True)]


def test_demo_carries_on_where_no_model_or_prediction_was_made(tmp_path, demo_calls):
    """Data made, training not begun (interrupted): the demo goes on, as `run` would."""
    target = tmp_path / "demo"
    (target / "source").mkdir(parents=True)
    (target / "data").mkdir()
    (target / "model").mkdir()  # empty
    assert main(["demo", "--target", str(target)]) == 0
    assert demo_calls == [("run", False)]  # the demo data are kept


# -- compare: files only in the folder of -o --------------------------------------------


def _evaluated_run(folder, dice):
    """The two files compare reads of a run (a run of an older minc-keras has no more)."""
    (folder / "model").mkdir(parents=True)
    (folder / "report").mkdir()
    (folder / "model" / "config.json").write_text(json.dumps({"model_type": "model_0_0"}))
    pd.DataFrame({"class_name": ["GM", "WM"], "dice": dice}).to_csv(
        folder / "report" / "metrics.csv", index=False)
    return folder


def test_compare_without_output_prints_and_writes_nothing(tmp_path, monkeypatch, capsys):
    runs = [_evaluated_run(tmp_path / name, dice)
            for name, dice in (("a", [0.9, 0.8]), ("b", [0.7, 0.6]))]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["compare", *map(str, runs)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["run", "model"]
    assert "dice_GM" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]  # the table, nothing else
    assert "-o DIR" in captured.err
    assert list(here.iterdir()) == []
    assert not list(tmp_path.rglob("compare.*"))


def test_compare_writes_into_the_output_folder(tmp_path, capsys):
    runs = [_evaluated_run(tmp_path / "a", [0.9, 0.8])]
    out = tmp_path / "out"
    assert main(["compare", *map(str, runs), "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out / 'compare.csv'}" in stdout
    assert f"wrote {out / 'compare.png'}" in stdout
    assert pd.read_csv(out / "compare.csv")["dice_GM"].tolist() == [0.9]


# -- the training log names the classes of --class-names --------------------------------


def test_training_log_uses_the_class_names_and_history_keeps_its_keys(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=4, fmt="nii")
    target = tmp_path / "run"
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--target", str(target), "--epochs", "1", "--batch-size", "8",
                 "--class-names", "background,shell,core"]) == 0
    log = capsys.readouterr().out
    for shown in ("dice_shell", "val_dice_core"):
        assert shown in log, log
    for hidden in ("dice_1", "dice_2"):
        assert hidden not in log, log
    history = json.loads((target / "model" / "history.json").read_text())
    assert {"dice_1", "dice_2", "val_dice_1", "val_dice_2"} <= set(history)
