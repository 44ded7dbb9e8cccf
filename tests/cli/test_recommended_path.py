"""The paths the README recommends, end to end: ``--recipe default`` and ``minc-keras demo``.

Both take minutes on two cores (compiling the shared network's step for three slice sizes
alone takes a few), so they are marked ``slow``; CI runs them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.io import read_volume

VIEWS = ["axial", "coronal", "sagittal"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_default_recipe_end_to_end(tmp_path, capsys):
    """Shared views, compiled steps, calibration and three-view prediction, in one run.

    A short budget and a smaller U-Net (``--nK 8,16``: two levels) keep it to minutes;
    compiling costs the same whatever the filters.
    """
    from minc_keras.inference.segmenter import load_segmenter

    source = write_dataset(tmp_path / "source", n_subjects=6)
    target = tmp_path / "run"
    assert main(["run", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25",
                 "--recipe", "default", "--time-budget", "0.5", "--nK", "8,16",
                 "--predict", "all"]) == 0
    err = capsys.readouterr().err
    # the steps were compiled, or compiling was left out with a warning naming the flag
    assert "training step compiled in" in err or "--jit-compile" in err, err[-3000:]

    config = json.loads((target / "model" / "config.json").read_text())
    assert (config["recipe"], config["views"], config["shared_views"]) == (
        "default", VIEWS, True)
    assert config["jit_compile"]
    assert config["calibrate"]
    # three view files, one network: the same weights in each, counted once
    files = [target / "model" / name
             for name in ("model.keras", "model_coronal.keras", "model_sagittal.keras")]
    assert all(path.is_file() for path in files)
    segmenter = load_segmenter(files[0])
    assert segmenter.views == VIEWS
    infos = [info for _, info in segmenter.members]
    assert all(info.shared_network for info in infos)
    assert [info.ensemble for info in infos] == [[p.name for p in files]] * 3
    first = segmenter.members[0][0].get_weights()
    for model, _ in segmenter.members[1:]:
        assert all(np.array_equal(a, b)
                   for a, b in zip(first, model.get_weights(), strict=True))
    # one network trained, within its budget: one progress file
    states = sorted(p.name for p in (target / "model" / "checkpoints").glob("state*.json"))
    assert states == ["state.json"]
    state = json.loads((target / "model" / "checkpoints" / "state.json").read_text())
    assert state["complete"]
    assert state["epochs_done"] >= 1
    # calibrated: class offsets in the first file, reported in summary.json
    assert len(infos[0].class_offsets) == 3
    summary = json.loads((target / "report" / "summary.json").read_text())
    assert summary["parameters"] == segmenter.count_params()
    assert set(summary["calibration"]["offsets"]) == set(infos[0].class_names[1:])
    assert summary["calibration"]["scans"] >= 1
    # predicted: every test subject's labels, in its scan's grid
    split = pd.read_csv(target / "report" / "images.csv", dtype=str)
    tests = split[split["category"] == "test"]
    assert len(tests) >= 1
    for row in tests.itertuples():
        labels = next((target / "predict" / "test").glob(f"{row.subject}_*_dseg.mnc"))
        image = next((source / row.subject).glob("*T1w_anat*"))
        predicted = read_volume(labels, label=True)
        assert predicted.shape == read_volume(image).shape
        assert set(np.unique(predicted.data)) <= {0, 1, 2}
    assert (target / "report" / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_end_to_end(tmp_path, capsys):
    """``minc-keras demo``, the README's first command, with one epoch."""
    pytest.importorskip("nilearn", reason="the demo data are made from nilearn's template")
    target = tmp_path / "demo"
    assert main(["demo", "--target", str(target), "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"demo data written to {target / 'source'}" in out
    assert f"minc-keras run --source {target / 'source'} --target {target} --epochs 1" in out
    assert "71,987 parameters" in out
    assert len(list((target / "source").glob("sub-*/*T1w_anat*.mnc"))) == 8
    assert len(json.loads((target / "model" / "history.json").read_text())["loss"]) == 1
    summary = json.loads((target / "report" / "summary.json").read_text())
    assert summary["parameters"] == 71987
    assert set(summary["mean_dice"]) == {"GM", "WM"}
    assert all(dice > 0.5 for dice in summary["mean_dice"].values())  # one epoch learns a lot
    predicted = list((target / "predict" / "test").glob("*_dseg.mnc"))
    assert predicted
    assert list((target / "predict" / "test").glob("*_montage.png"))
    assert (target / "report" / "report.html").is_file()
