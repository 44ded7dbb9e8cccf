"""Shifted passes at prediction: a half-resolution network sees each voxel in two blocks."""

import json

import keras
import numpy as np
import pytest

from minc_keras.inference.probabilities import predict_probabilities
from minc_keras.inference.segmenter import Segmenter


class _RowParity(keras.layers.Layer):
    """Class 1 with probability 1 on the even rows of the network input, class 0 on odd."""

    def call(self, x):
        rows = keras.ops.arange(keras.ops.shape(x)[1]) % 2 == 0
        even = keras.ops.cast(rows, "float32")[None, :, None, None] + 0.0 * x
        return keras.ops.concatenate([1.0 - even, even], axis=-1)


def _parity_model() -> keras.Model:
    inputs = keras.Input(shape=(None, None, 1))
    return keras.Model(inputs, _RowParity()(inputs))


def _volume(shape=(9, 11, 6)) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.1, 1.0, size=shape).astype("float32")


@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_two_passes_put_every_voxel_once_on_an_even_and_once_on_an_odd_row(view):
    volume = _volume()
    one = predict_probabilities(_parity_model(), volume, view=view, multiple=4)
    two = predict_probabilities(_parity_model(), volume, view=view, multiple=4, shifts=2)
    assert set(np.unique(one[..., 1])) == {0.0, 1.0}  # one pass: it depends on the row
    np.testing.assert_array_equal(two[..., 1], 0.5)


@pytest.mark.parametrize("shape", [(8, 8, 3), (7, 9, 3)])
def test_a_network_blind_to_position_gives_the_same_probabilities_shifted(shape):
    inputs = keras.Input(shape=(None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same",
                                                    activation="softmax")(inputs))
    volume = _volume(shape)
    one = predict_probabilities(model, volume, multiple=8)
    two = predict_probabilities(model, volume, multiple=8, shifts=2)
    np.testing.assert_allclose(two, one, atol=1e-6)


def test_the_segmenter_uses_each_models_own_passes_and_one_for_older_models():
    volume = _volume()
    info = {"view": "axial", "multiple": 4}
    older = Segmenter([(_parity_model(), info)]).probabilities(volume)
    strided = Segmenter([(_parity_model(), {**info, "shift_passes": 2})]).probabilities(volume)
    assert set(np.unique(older[..., 1])) == {0.0, 1.0}
    np.testing.assert_array_equal(strided[..., 1], 0.5)


@pytest.mark.parametrize("stride", [1, 2])
def test_training_records_one_pass_per_input_stride_and_predict_uses_it(tmp_path, stride):
    from synthetic import write_dataset

    from minc_keras.cli.main import main
    from minc_keras.models.info import read_info

    source = write_dataset(tmp_path / "source", n_subjects=3)
    target = tmp_path / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.67", "0.33", "--model-type", "unet",
                 "--nK", "2,4", "--input-stride", str(stride), "--epochs", "1",
                 "--batch-size", "4", "--quiet"]) == 0
    model = keras.saving.load_model(target / "model" / "model.keras")
    assert read_info(model).shift_passes == stride
    assert json.loads((target / "model" / "config.json").read_text())["input_stride"] == stride
    scan = next(source.glob("sub-01/*T1w*"))
    assert main(["predict", "--model", str(target / "model" / "model.keras"), "-o",
                 str(tmp_path / "out"), "--quiet", str(scan)]) == 0
    sidecar = json.loads(next((tmp_path / "out").glob("*_dseg.json")).read_text())
    assert sidecar["shift_passes"] == [stride]


def test_a_forced_pass_count_replaces_the_models_own():
    info = {"view": "axial", "multiple": 4, "shift_passes": 2}
    forced = Segmenter([(_parity_model(), info)], shift_passes=1)
    assert forced.shift_passes == [1]
    assert set(np.unique(forced.probabilities(_volume())[..., 1])) == {0.0, 1.0}
