"""The one preprocessing contract: forward and inverse, shared by the cache and prediction."""

import numpy as np
import pytest
from synthetic import ZYX_AFFINE, make_subject, write_dataset

from minc_keras.preprocessing.preprocessor import Preprocessor
from minc_keras.preprocessing.transforms import brain_mask, normalise_intensity

#: an isotropic-free diagonal affine, and the same voxel sizes with axes permuted and flipped
DIAGONAL = np.diag([1.0, 2.0, 3.0, 1.0])
PERMUTED_FLIPPED = np.array([[0.0, 0.0, -3.0, 12.0],
                             [-1.0, 0.0, 0.0, 5.0],
                             [0.0, 2.0, 0.0, -7.0],
                             [0.0, 0.0, 0.0, 1.0]])


def _asymmetric_scan() -> np.ndarray:
    """np.arange(480).reshape(8, 6, 10) with a zero background around a head."""
    data = np.arange(480, dtype=np.float32).reshape(8, 6, 10) + 1
    head = np.zeros(data.shape, bool)
    head[1:7, 2:5, 2:9] = True
    return np.where(head, data, 0).astype(np.float32)


@pytest.mark.parametrize("affine", [DIAGONAL, PERMUTED_FLIPPED], ids=["diagonal", "permuted"])
def test_inverse_of_forward_is_the_scan_normalised_in_its_own_grid(affine):
    data = _asymmetric_scan()
    labels = (data > 240).astype(np.int16) + (data > 400)
    prep = Preprocessor(crop_margin=1)
    forward = prep.forward(data, affine, labels=labels)
    # the crop is smaller than the scan, so the inverse really has to put it back
    assert np.prod(forward.data.shape) < data.size
    # intensities: exactly the scan normalised inside its head, in the scan's axis order
    expected, _ = normalise_intensity(data, brain_mask(data))
    np.testing.assert_array_equal(prep.inverse(forward.data, forward.placement), expected)
    # labels: exactly back where they were
    np.testing.assert_array_equal(prep.inverse(forward.labels, forward.placement), labels)
    # a 4-D array keeps its channels; outside the crop box the fill value per channel
    probs = np.stack([1.0 - forward.data, forward.data], axis=-1)
    back = prep.inverse(probs, forward.placement, fill=np.array([1.0, 0.0], np.float32))
    assert back.shape == (*data.shape, 2)
    np.testing.assert_array_equal(back[..., 1], expected)
    np.testing.assert_array_equal(back[data == 0][:, 0], 1.0)


def test_the_permuted_affine_really_reorders_the_axes():
    forward = Preprocessor(crop_margin=0).forward(_asymmetric_scan(), PERMUTED_FLIPPED)
    # array axes (i, j, k) run along world (-y, z, -x): the RAS grid is (k, i, j)
    assert forward.canonical_shape == (10, 8, 6)
    assert forward.data.shape == (7, 6, 3)


def test_labels_widen_the_crop_but_never_change_the_normalisation():
    data = _asymmetric_scan()
    labels = np.zeros(data.shape, np.int16)
    labels[0, 0, 0] = 1  # a label voxel outside the head (intensity 0)
    prep = Preprocessor(crop_margin=1)
    with_labels = prep.forward(data, DIAGONAL, labels=labels)
    without = prep.forward(data, DIAGONAL)
    assert with_labels.box[0] == without.box[0] == slice(0, 8)
    assert with_labels.box[1:] == (slice(0, 6), slice(0, 10))
    assert without.box[1:] == (slice(1, 6), slice(1, 10))
    assert with_labels.intensity_range == without.intensity_range
    np.testing.assert_array_equal(with_labels.data[:, 1:, 1:], without.data)
    assert with_labels.labels[0, 0, 0] == 1
    assert not with_labels.data[:, 0].any()
    assert not with_labels.data[:, :, 0].any()


def test_resampling_to_the_training_voxel_size_and_back():
    data = _asymmetric_scan()
    prep = Preprocessor(crop_margin=1, voxel_sizes_mm=(0.5, 2.0, 1.5))
    forward = prep.forward(data, DIAGONAL)
    assert forward.zoom == (2.0, 1.0, 2.0)
    assert forward.data.shape == (16, 5, 18)  # the crop (8, 5, 9), resampled
    back = prep.inverse(forward.data, forward.placement)
    assert back.shape == data.shape
    expected, _ = normalise_intensity(data, brain_mask(data))
    # linear interpolation there and back blurs only the head's edge
    assert np.abs(back - expected).mean() < 0.02
    labels = prep.inverse((forward.data > 0.5).astype(np.int16), forward.placement)
    assert labels.dtype == np.int16
    assert set(np.unique(labels)) <= {0, 1}
    # within the tolerance the scan's own grid is kept, voxel for voxel
    near = Preprocessor(voxel_sizes_mm=(1.01, 1.99, 3.0)).forward(data, DIAGONAL)
    assert near.zoom == (1.0, 1.0, 1.0)


def test_info_fields_round_trip():
    prep = Preprocessor(low=1.0, high=99.0, clip=2.0, crop_margin=3, voxel_sizes_mm=[1, 1, 2])
    assert Preprocessor.from_info_fields(**prep.info_fields()) == prep
    assert Preprocessor.from_info_fields() == Preprocessor()
    with pytest.raises(ValueError, match="zscore"):
        Preprocessor(method="zscore")


class _Recorder:
    """A stand-in segmenter that records the volume the network would see."""

    def __init__(self, info):
        self.info = info
        self.seen = None

    def probabilities(self, volume, *, batch_size=8):
        self.seen = np.array(volume)
        return np.zeros((*volume.shape, 3), np.float32)


def test_cache_and_prediction_normalise_a_scan_to_the_same_array(tmp_path):
    from minc_keras.data.cache import TRAINING_PREPROCESSOR, build_cache
    from minc_keras.inference.segment import segment_volume
    from minc_keras.io import read_volume
    from minc_keras.models.info import ModelInfo

    source = write_dataset(tmp_path / "source", n_subjects=1, fmt="mnc")
    folder = source / "sub-01"
    row = {"subject": "sub-01", "session": "", "category": "train",
           "input": str(next(folder.glob("*T1w*"))), "label": str(next(folder.glob("*seg*")))}
    cache = build_cache([row], tmp_path / "data", config={"source": "x"}, quiet=True)
    voxel = np.sqrt((ZYX_AFFINE[:3, :3] ** 2).sum(axis=0))[[2, 1, 0]]  # RAS order
    info = ModelInfo(class_values=[0, 1, 2], num_outputs=3,
                     **{**TRAINING_PREPROCESSOR.info_fields(),
                        "voxel_sizes_mm": [float(v) for v in voxel]})
    recorder = _Recorder(info)
    segmentation = segment_volume(recorder, read_volume(row["input"]))
    cached = np.asarray(cache.image(0))
    assert recorder.seen.dtype == np.float32
    assert recorder.seen.shape == cached.shape
    np.testing.assert_array_equal(recorder.seen.astype(np.float16), cached)
    assert segmentation.labels.shape == read_volume(row["input"]).shape
    # and a head whose labels stay inside it is cropped the same way in both
    image, _ = make_subject(1)
    assert TRAINING_PREPROCESSOR.forward(image, np.eye(4)).box == \
        TRAINING_PREPROCESSOR.forward(image, np.eye(4), labels=image > 0).box
