"""The U-Net's full-resolution refinement head (--refine-filters)."""

import keras
import numpy as np
import pytest

from minc_keras.cli.main import main
from minc_keras.core.errors import UsageError
from minc_keras.models import build_model
from minc_keras.models.unet import build_unet

X = np.random.default_rng(0).normal(size=(2, 32, 48, 1)).astype("float32")


def _copy_shared_weights(source: keras.Model, target: keras.Model) -> None:
    """Give ``target`` the weights of every layer it shares by name with ``source``."""
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


@pytest.mark.parametrize("stride", [1, 2])
def test_the_head_starts_as_the_plain_unet_and_adds_its_parameters(stride):
    plain = build_unet((None, None, 1), 3, nK=[4, 8], input_stride=stride)
    refined = build_unet((None, None, 1), 3, nK=[4, 8], input_stride=stride, refine_filters=4)
    # 3x3 conv over 3 scores + the slice (no bias), batch norm, 1x1 conv back to 3 scores
    assert refined.count_params() - plain.count_params() == 4 * 9 * 4 + 4 * 4 + 4 * 3 + 3
    _copy_shared_weights(plain, refined)
    np.testing.assert_allclose(refined.predict_on_batch(X), plain.predict_on_batch(X),
                               atol=1e-6)


def test_the_head_gives_the_same_outputs_channels_first_inside():
    last = build_unet((None, None, 1), 3, nK=[4, 8], input_stride=2, refine_filters=4,
                      channels_first=False)
    first = build_unet((None, None, 1), 3, nK=[4, 8], input_stride=2, refine_filters=4,
                       channels_first=True)
    rng = np.random.default_rng(1)
    last.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32")
                      if "refine_output" in w.path else w.numpy() for w in last.weights])
    first.set_weights(last.get_weights())
    expected = last.predict_on_batch(X)
    np.testing.assert_allclose(first.predict_on_batch(X), expected, atol=1e-5)
    np.testing.assert_allclose(expected.sum(axis=-1), 1.0, rtol=1e-5)


def test_the_head_trains_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[(x[..., 0] > 0).astype(int) + (x[..., 0] > 1)]
    model = build_model("unet", num_classes=3, nK=[4, 8], input_stride=2, refine_filters=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    first = model.train_on_batch(x, y)
    for _ in range(20):
        last = model.train_on_batch(x, y)
    assert last < first
    assert np.abs(model.get_layer("refine_output").get_weights()[0]).max() > 0
    path = tmp_path / "refined.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_the_head_is_refused_for_other_models_and_bad_values(capsys):
    with pytest.raises(UsageError, match=r"applies to the U-Net.*not to model_0_0"):
        build_model("model_0_0", num_classes=3, refine_filters=8)
    build_model("model_0_0", num_classes=3, refine_filters=0)  # the default is fine anywhere
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="refine_filters must be an integer >= 0"):
            build_model("unet", num_classes=3, nK=[2], refine_filters=bad)
    assert main(["--source", "nowhere", "--target", "t", "--model-type", "model_0_0",
                 "--refine-filters", "8"]) == 2
    assert "--refine-filters) applies to the U-Net" in capsys.readouterr().err
