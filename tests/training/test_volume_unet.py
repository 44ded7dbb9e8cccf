"""The 3-D U-Net of whole volumes (``--model-type unet3d --views volume``)."""

import json

import keras
import nibabel as nib
import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.core.errors import UsageError
from minc_keras.data.augment import VolumeAugmenter
from minc_keras.data.cache import SliceCache
from minc_keras.data.patches import PATCHES_PER_SCAN, PatchDataset
from minc_keras.inference.probabilities import volume_probabilities
from minc_keras.models import build_model, spatial_dims
from minc_keras.models.saving import load_trained


def test_unet3d_maps_a_volume_to_probabilities_of_every_voxel():
    assert spatial_dims("unet3d") == 3
    assert spatial_dims("unet") == 2
    model = build_model("unet3d", num_classes=3, nK=[4, 8], input_stride=2)
    x = np.random.default_rng(0).normal(size=(1, 8, 12, 16, 1)).astype("float32")
    probabilities = keras.ops.convert_to_numpy(model(x))
    assert probabilities.shape == (1, 8, 12, 16, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(UsageError, match="all three sides must be multiples of 4"):
        build_model("unet3d", num_classes=3, nK=[4, 8], input_stride=2,
                    input_shape=(8, 10, 16, 1))
    with pytest.raises(UsageError, match="input_shape must be \\(x, y, z, channels\\)"):
        build_model("unet3d", num_classes=3, input_shape=(16, 16, 1))


def test_volume_probabilities_keep_the_scans_own_size_and_average_the_shifted_passes():
    model = build_model("unet3d", num_classes=3, nK=[4, 8], input_stride=2)
    volume = np.random.default_rng(1).random((9, 13, 6)).astype("float32")
    one = volume_probabilities(model, volume, multiple=4)
    two = volume_probabilities(model, volume, multiple=4, shifts=2)
    assert one.shape == two.shape == (9, 13, 6, 3)
    shifted = np.pad(volume, [(1, 2), (1, 2), (1, 1)])[None, ..., None]
    second = keras.ops.convert_to_numpy(model.predict_on_batch(shifted))[0, 1:10, 1:14, 1:7]
    np.testing.assert_allclose(two, (one + second) / 2, atol=1e-5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("volume")
    source = write_dataset(root / "source", n_subjects=4, fmt="nii")
    assert main(["prepare", "--source", str(source), "--target", str(root / "run"),
                 "--input-str", "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25",
                 "--quiet"]) == 0
    return SliceCache.open(root / "run" / "data")


def test_training_cubes_are_repeatable_per_epoch(cache):
    data = PatchDataset(cache, "train", batch_size=2, patch_size=16, seed=3, rare_class=1)
    assert len(data) == PATCHES_PER_SCAN * 2 // 2
    images, targets = data[5]
    assert images.shape == (2, 16, 16, 16, 1)
    assert targets.shape == (2, 16, 16, 16, 3)
    np.testing.assert_array_equal(data[5][0], images)  # the same batch whatever the order
    data.set_epoch(1)
    assert not np.array_equal(data[5][0], images)  # another epoch, other cubes


def test_rare_class_cubes_hold_that_class(cache, monkeypatch):
    import minc_keras.data.patches as patches

    monkeypatch.setattr(patches, "RARE_SHARE", 1.0)  # every cube centred near the class

    def holding(dataset, cls):
        return np.mean([dataset[i][1][..., cls].any(axis=(1, 2, 3)).mean()
                        for i in range(len(dataset))])

    for cls in (1, 2):
        near = PatchDataset(cache, "train", batch_size=8, patch_size=4, seed=3, rare_class=cls)
        anywhere = PatchDataset(cache, "train", batch_size=8, patch_size=4, seed=3)
        assert holding(near, cls) == 1.0
        assert holding(anywhere, cls) < 1.0


def test_whole_scans_come_one_per_batch_padded_to_the_multiple(cache):
    data = PatchDataset(cache, "validate", patch_size=None, multiple=16)
    assert len(data) == 1
    images, targets = data[0]
    shape = cache.scans[cache.by_category("validate")[0]].crop_shape
    assert images.shape[1:4] == tuple(-(-n // 16) * 16 for n in shape)
    assert targets[0, shape[0]:, ..., 0].all()  # the padding is background


def test_volume_augmenter_mirrors_left_right_and_keeps_the_background_zero():
    rng = np.random.default_rng(0)
    images = np.zeros((1, 8, 8, 8, 1), np.float32)
    images[0, :3, 2:6, 2:6] = 0.5
    classes = (images[..., 0] > 0).astype(np.uint8)
    out, labels = VolumeAugmenter(flip=1.0, probability=1.0)(images, classes, rng)
    np.testing.assert_array_equal(labels[0], classes[0, ::-1])
    assert np.all(out[0, :5] == 0)
    assert np.all(out[0, 5:, 2:6, 2:6] > 0)


def test_unet3d_trains_calibrates_and_predicts_in_the_scans_grid(tmp_path, monkeypatch):
    def no_compiling(*args):
        raise AssertionError("the volume view was compiled")

    # the recipe's --jit-compile is for slice views: the 3-D step did not compile whole
    monkeypatch.setattr("minc_keras.training.trainer.compile_train_step", no_compiling)
    source = write_dataset(tmp_path / "source", n_subjects=5, fmt="nii")
    target = tmp_path / "run"
    # the command of benchmarks/README.md's 3-D rows, with a tiny network and budget
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.6", "0.2", "--recipe", "default",
                 "--model-type", "unet3d", "--views", "volume", "--batch-size", "2",
                 "--loss", "dice_ce", "--nK", "4", "--time-budget", "0.1", "--predict", "1",
                 "--quiet"]) == 0
    assert json.loads((target / "model" / "config.json").read_text())["jit_compile"]
    _, info = load_trained(target / "model" / "model.keras")
    assert info.view == "volume"
    assert info.model_type == "unet3d"
    assert info.shift_passes == 2
    assert info.class_offsets is not None
    written = sorted((target / "predict" / "test").glob("*_dseg.nii.gz"))
    assert written
    scan = next(source.glob(f"{written[0].name.split('_')[0]}/*T1w_anat*"))
    assert nib.load(written[0]).shape == nib.load(scan).shape
    np.testing.assert_allclose(nib.load(written[0]).affine, nib.load(scan).affine)


@pytest.mark.parametrize(("flags", "message"), [
    (["--model-type", "unet3d", "--views", "coronal"], "segments whole volumes"),
    (["--recipe", "default", "--model-type", "unet3d"], "give --views volume"),
    (["--model-type", "unet", "--views", "volume"], "needs a network of volumes"),
    (["--views", "volume,axial"], "is not valid"),
])
def test_views_that_do_not_fit_the_network_are_refused(tmp_path, capsys, flags, message):
    source = write_dataset(tmp_path / "source", n_subjects=4, fmt="nii")
    code = main(["--source", str(source), "--target", str(tmp_path / "run"), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25", "--epochs", "1",
                 *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
