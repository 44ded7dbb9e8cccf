"""End to end: the workshop's one command on tiny generated MINC and NIfTI datasets."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.data.cache import SliceCache
from minc_keras.inference.segmenter import Segmenter, segment_cached
from minc_keras.io import read_volume
from minc_keras.models.info import read_info


def _workshop_args(source, target, *extra):
    return ["--source", str(source), "--target", str(target), "--epochs", "2",
            "--model-type", "model_0_0", "--input-str", "*T1w_anat*", "--label-str", "*seg*",
            "--predict", "1", "--ratios", "0.5", "0.25", "--activation-hidden", "relu",
            "--activation-output", "softmax", "--batch-size", "8", "--lr", "3e-3", "--quiet",
            *extra]


@pytest.mark.parametrize("fmt", ["mnc", "nii"])
def test_workshop_command_end_to_end(tmp_path, capsys, fmt):
    source = write_dataset(tmp_path / "source", n_subjects=6, fmt=fmt)
    target = tmp_path / "run"
    assert main(_workshop_args(source, target)) == 0
    out = capsys.readouterr().out
    assert "Test: Loss=" in out
    assert "Metric=" in out
    assert "71,987 parameters" in out
    split = pd.read_csv(target / "report" / "images.csv")
    assert set(split.category) == {"train", "validate", "test"}
    assert (target / "model" / "model.keras").is_file()
    history = json.loads((target / "model" / "history.json").read_text())
    assert len(history["loss"]) == 2
    assert "val_loss" in history
    assert (target / "report" / "learning_curves.png").stat().st_size > 1000
    metrics = pd.read_csv(target / "report" / "metrics.csv")
    assert set(metrics["class"]) == {1, 2}
    assert metrics.dice.between(0, 1).all()
    # the prediction is in the input's format and exact grid, with the label values
    test_subject = split[split.category == "test"].iloc[0]
    suffix = ".mnc" if fmt == "mnc" else ".nii.gz"
    name = f"{test_subject.subject}_{test_subject.session}"
    predicted = read_volume(target / "predict" / "test" / f"{name}_dseg{suffix}", label=True)
    original = read_volume(test_subject.input)
    assert predicted.shape == original.shape
    np.testing.assert_allclose(predicted.affine, original.affine, atol=1e-6)
    assert set(np.unique(predicted.data)) <= {0, 1, 2}
    assert (target / "predict" / "test" / f"{name}_montage.png").is_file()


def test_saved_model_predicts_identically_after_reload(tmp_path):
    source = write_dataset(tmp_path / "source", n_subjects=6, fmt="mnc")
    target = tmp_path / "run"
    assert main(_workshop_args(source, target, "--epochs", "1")) == 0
    model = keras.saving.load_model(target / "model" / "model.keras")
    info = read_info(model)
    assert info.class_values == [0, 1, 2]
    assert info.view == "axial"
    cache = SliceCache.open(target / "data")
    first = segment_cached(Segmenter([(model, info)]), cache, 0)
    again = keras.saving.load_model(target / "model" / "model.keras")
    np.testing.assert_array_equal(first, segment_cached(Segmenter([(again, info)]), cache, 0))
    x = np.random.default_rng(0).random((2, 16, 24, 1)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(x), again.predict_on_batch(x), atol=1e-6)


def test_rerun_reuses_model_and_make_model_only(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=6, fmt="mnc")
    target = tmp_path / "run"
    assert main(_workshop_args(source, target, "--epochs", "1")) == 0
    stamp = (target / "model" / "model.keras").stat().st_mtime_ns
    assert main(_workshop_args(source, target, "--epochs", "1")) == 0
    assert (target / "model" / "model.keras").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["train", "--target", str(target), "--model-type", "model_3_0", "--model",
                 "small.keras", "--make-model-only", "--quiet"]) == 0
    assert "21,043 parameters" in capsys.readouterr().out


def test_other_configuration_in_same_target_is_refused(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=6, fmt="mnc")
    target = tmp_path / "run"
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w", "--label-str", "variant-seg", "--ratios", "0.5", "0.25", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--clobber" in err
    assert "Traceback" not in err


def test_evaluate_without_model_is_a_clear_error(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=6, fmt="mnc")
    target = tmp_path / "run"
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w", "--label-str", "seg", "--ratios", "0.5", "0.25", "--quiet"]) == 0
    assert main(["evaluate", "--target", str(target)]) == 2
    assert "run `minc-keras train` first" in capsys.readouterr().err


def test_users_own_keras_builder_trains_through_the_pipeline(tmp_path):
    from minc_keras.data.prepare import prepare
    from minc_keras.training import TrainOptions, train
    from minc_keras.workflows import evaluate

    def my_model(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", dilation_rate=2)(x)
        outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="by_hand")

    source = write_dataset(tmp_path / "source", n_subjects=6, fmt="nii")
    target = tmp_path / "run"
    prepare(source, target, input_str="T1w_anat", label_str="seg", ratios=(0.5, 0.25),
            quiet=True)
    result = train(target, TrainOptions(builder=my_model, epochs=1, batch_size=8), quiet=True)
    assert result.trained
    assert result.parameters == (1 * 9 * 8 + 8) + (8 * 9 * 8 + 8) + (8 * 3 + 3)
    reloaded = keras.saving.load_model(result.model_path)
    assert read_info(reloaded).model_type == "custom-builder"
    assert evaluate(target, quiet=True).table.dice.between(0, 1).all()


def test_binary_brain_mask_with_sigmoid_output(tmp_path, capsys):
    from minc_keras.io import Volume, write_volume

    source = write_dataset(tmp_path / "source", n_subjects=6, fmt="mnc")
    for seg in source.glob("*/*seg*"):
        label = read_volume(seg, label=True)
        mask_path = seg.with_name(seg.name.replace("variant-seg", "brainmask"))
        write_volume(Volume((label.data > 0).astype("uint8"), label.affine), mask_path)
        seg.unlink()
    target = tmp_path / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "brainmask", "--loss", "binary_crossentropy",
                 "--activation-output", "sigmoid", "--ratios", "0.5", "0.25", "--epochs", "2",
                 "--batch-size", "8", "--lr", "5e-3", "--predict", "all", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Metric=" in out
    model = keras.saving.load_model(target / "model" / "model.keras")
    assert model.output_shape[-1] == 1
    metrics = pd.read_csv(target / "report" / "metrics.csv")
    assert set(metrics["class"]) == {1}
    assert metrics.dice.min() > 0.5
    predicted = next((target / "predict" / "test").glob("*_dseg.mnc"))
    assert set(np.unique(read_volume(predicted, label=True).data)) <= {0, 1}
