"""``--shared-views``: one network trained on the slices of every view, run along each."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.data.cache import SliceCache
from minc_keras.data.dataset import SliceDataset, slice_size
from minc_keras.inference.segmenter import load_segmenter
from minc_keras.models.saving import load_trained
from minc_keras.training import RunControl, TrainOptions, train

VIEWS = ["axial", "coronal", "sagittal"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from minc_keras.data.prepare import prepare

    root = tmp_path_factory.mktemp("shared")
    source = write_dataset(root / "source", n_subjects=4)
    target = root / "run"
    prepare(source, target, input_str="T1w_anat", label_str="seg", ratios=(0.5, 0.5),
            quiet=True)
    return target


def _options(**changes) -> TrainOptions:
    base = {"model_type": "unet", "nK": [4], "epochs": 2, "batch_size": 4, "lr": 1e-3,
            "views": VIEWS, "shared_views": True}
    return TrainOptions(**{**base, **changes})


RUN = {"quiet": True, "clobber": True}


def test_one_network_learns_every_view_and_each_views_file_runs_it(prepared, caplog):
    with caplog.at_level(logging.INFO, logger="minc_keras.training.trainer"):
        result = train(prepared, _options(), **RUN)
    cache = SliceCache.open(prepared / "data")
    slices = sum(SliceDataset(cache, "train", view).num_slices for view in VIEWS)
    assert f"shared network of the axial, coronal, sagittal views ({result.parameters} " \
           f"parameters) on {slices} slices" in caplog.text
    assert list(result.histories) == ["axial"]  # one network, one learning curve
    assert len(result.history["loss"]) == 2
    files = [prepared / "model" / name
             for name in ("model.keras", "model_coronal.keras", "model_sagittal.keras")]
    loaded = [load_trained(path, compile=False) for path in files]
    first = loaded[0][0].get_weights()
    assert result.parameters == loaded[0][0].count_params()
    for (model, info), view in zip(loaded, VIEWS, strict=True):
        assert info.view == view
        assert info.shared_network
        assert info.slice_size == list(slice_size(cache, view, info.multiple))
        for mine, theirs in zip(model.get_weights(), first, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    # the views' slices differ in size here, so a shared network is not a trivial case
    assert len({tuple(info.slice_size) for _, info in loaded}) == 3
    segmenter = load_segmenter(files[0])
    assert segmenter.views == VIEWS
    assert segmenter.count_params() == result.parameters


def test_a_shared_network_is_counted_once_when_kept(prepared):
    train(prepared, _options(epochs=1), **RUN)
    kept = train(prepared, _options(epochs=1), quiet=True)
    assert not kept.trained
    assert kept.parameters == load_trained(prepared / "model" / "model.keras",
                                           compile=False)[0].count_params()


def test_resume_writes_the_views_files_a_kill_left_missing(prepared, capsys):
    from minc_keras.cli.main import main

    train(prepared, _options(epochs=1), **RUN)
    copy = prepared / "model" / "model_sagittal.keras"
    copy.unlink()  # as if killed after training, before the copies were written
    assert main(["train", "--target", str(prepared), "--quiet"]) == 2
    assert "was interrupted (sagittal view" in capsys.readouterr().err
    assert main(["train", "--target", str(prepared), "--resume", "--quiet"]) == 0
    assert load_trained(copy, compile=False)[1].view == "sagittal"


def test_a_shared_network_draws_one_learning_curve(prepared):
    from minc_keras.workflows import train_and_report

    report = prepared / "report"
    report.mkdir(exist_ok=True)
    stale = report / "learning_curves_coronal.png"  # from a run of one network per view
    stale.write_bytes(b"old curve")
    _, figures = train_and_report(prepared, _options(epochs=1), RunControl(**RUN))
    assert figures == [report / "learning_curves.png"]
    assert figures[0].is_file()
    assert not stale.exists()
