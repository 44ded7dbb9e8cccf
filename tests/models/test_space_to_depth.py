"""SpaceToDepth / DepthToSpace and the U-Net's half-resolution stem (--input-stride)."""

import keras
import numpy as np
import pytest
import torch

from minc_keras.core.errors import UsageError
from minc_keras.models import DepthToSpace, SpaceToDepth, build_model, required_multiple


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("block", [2, 3])
def test_channels_first_matches_torch_pixel_unshuffle_and_shuffle(block):
    x = np.random.default_rng(0).normal(size=(2, 3, 6 * block, 4 * block)).astype("float32")
    folded = _numpy(SpaceToDepth(block, data_format="channels_first")(x))
    expected = torch.nn.functional.pixel_unshuffle(torch.tensor(x), block).numpy()
    np.testing.assert_array_equal(folded, expected)
    assert folded.shape == (2, 3 * block**2, 6, 4)
    back = _numpy(DepthToSpace(block, data_format="channels_first")(folded))
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(
        back, torch.nn.functional.pixel_shuffle(torch.tensor(folded), block).numpy())


def test_channels_last_is_the_transposed_channels_first():
    x = np.random.default_rng(1).normal(size=(2, 8, 6, 3)).astype("float32")
    last = _numpy(SpaceToDepth(2)(x))
    first = _numpy(SpaceToDepth(2, data_format="channels_first")(x.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(last, first.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(_numpy(DepthToSpace(2)(last)), x)


def test_volumes_fold_each_block_of_voxels_into_channels():
    x = np.random.default_rng(3).normal(size=(2, 4, 6, 8, 3)).astype("float32")
    folded = _numpy(SpaceToDepth(2)(x))
    assert folded.shape == (2, 2, 3, 4, 24)
    # channel c * 8 + (i * 4 + j * 2 + k) holds voxel (2x + i, 2y + j, 2z + k) of channel c
    np.testing.assert_array_equal(folded[0, 1, 2, 3, 1 * 8 + 5], x[0, 2 + 1, 4 + 0, 6 + 1, 1])
    np.testing.assert_array_equal(_numpy(DepthToSpace(2)(folded)), x)
    first = _numpy(SpaceToDepth(2, data_format="channels_first")(x.transpose(0, 4, 1, 2, 3)))
    np.testing.assert_array_equal(first.transpose(0, 2, 3, 4, 1), folded)
    assert SpaceToDepth(2).compute_output_shape((None, None, 8, 6, 1)) == (None, None, 4, 3, 8)


def test_output_shapes_with_unknown_sizes():
    assert SpaceToDepth(2).compute_output_shape((None, None, 16, 3)) == (None, None, 8, 12)
    assert DepthToSpace(2, data_format="channels_first").compute_output_shape(
        (4, 12, 5, None)) == (4, 3, 10, None)
    with pytest.raises(ValueError, match="data_format"):
        SpaceToDepth(2, data_format="nchw")


def test_unet_with_input_stride_predicts_every_pixel_and_needs_a_multiple_of_16():
    assert required_multiple("unet") == 8
    model = build_model("unet", num_classes=3, nK=[4, 8], input_stride=2)
    assert model.get_layer("check_size").multiple == 4
    deep = build_model("unet", num_classes=3, nK=[2], input_stride=2)  # 4 levels
    assert deep.get_layer("check_size").multiple == 16
    with pytest.raises(UsageError, match="multiples of 16"):
        build_model("unet", num_classes=3, nK=[2], input_stride=2, input_shape=(40, 32, 1))
    x = np.random.default_rng(2).normal(size=(2, 32, 48, 1)).astype("float32")
    probabilities = _numpy(deep(x))
    assert probabilities.shape == (2, 32, 48, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    # neighbouring pixels of one 2x2 block get their own scores
    assert not np.allclose(probabilities[:, 0::2, 0::2], probabilities[:, 1::2, 1::2])


def test_input_stride_is_refused_for_other_models_and_bad_values():
    with pytest.raises(UsageError, match=r"applies to the U-Net.*not to model_0_0"):
        build_model("model_0_0", num_classes=3, input_stride=2)
    build_model("model_0_0", num_classes=3, input_stride=1)  # the default is fine anywhere
    for bad in (0, 1.5, True):
        with pytest.raises(UsageError, match="input_stride must be a positive integer"):
            build_model("unet", num_classes=3, nK=[2], input_stride=bad)


def test_strided_unet_trains_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[(x[..., 0] > 0).astype(int) + (x[..., 0] > 1)]
    model = build_model("unet", num_classes=3, nK=[4, 8], input_stride=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    first = model.train_on_batch(x, y)
    for _ in range(20):
        last = model.train_on_batch(x, y)
    assert last < first
    path = tmp_path / "strided.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_numpy(reloaded.predict(x, verbose=0)),
                               _numpy(model.predict(x, verbose=0)), atol=1e-6)


def test_run_with_input_stride_records_it_and_predicts_in_the_scans_grid(tmp_path):
    import json

    from synthetic import write_dataset

    from minc_keras.cli.main import main
    from minc_keras.io import read_volume

    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.5", "0.25", "--model-type", "unet",
                 "--nK", "4,8", "--input-stride", "2", "--epochs", "1", "--batch-size", "4",
                 "--quiet"]) == 0
    config = json.loads((target / "model" / "config.json").read_text())
    assert config["input_stride"] == 2
    model = keras.saving.load_model(target / "model" / "model.keras")
    assert "space_to_depth" in [layer.name for layer in model.layers[1].layers]
    scan = next(source.glob("sub-01/*T1w*"))
    assert main(["predict", "--model", str(target / "model" / "model.keras"), "-o",
                 str(tmp_path / "out"), "--quiet", str(scan)]) == 0
    labels = read_volume(next((tmp_path / "out").glob("*.mnc")))
    assert labels.data.shape == read_volume(scan).data.shape


def test_a_registered_builder_gets_input_stride_only_when_it_is_not_the_default():
    from minc_keras.models import register_model, unregister_model

    seen = []

    def tiny(input_shape, num_classes, **options):
        seen.append(options.get("input_stride"))
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(inputs))

    register_model("tiny_strided", tiny)
    try:
        build_model("tiny_strided", num_classes=2, input_stride=1)
        build_model("tiny_strided", num_classes=2, input_stride=2)
    finally:
        unregister_model("tiny_strided")
    assert seen == [None, 2]
