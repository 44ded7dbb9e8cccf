"""Training-slice augmentation keeps labels aligned with the image."""

import numpy as np
from synthetic import make_subject

from minc_keras.data.augment import SliceAugmenter


def _slices(n=6):
    image, labels = make_subject(3, shape_xyz=(40, 48, 8))
    images = np.repeat(image[None, :, :, 4, None] / 100.0, n, axis=0).astype(np.float32)
    return images, np.repeat(labels[None, :, :, 4], n, axis=0).astype(np.uint8)


def test_geometry_moves_labels_with_the_image():
    images, classes = _slices()
    augmenter = SliceAugmenter(gamma=0, bias=0, noise=0, probability=1.0, rotate_deg=15)
    out, labels = augmenter(images, classes, np.random.default_rng(0))
    assert not np.array_equal(labels, classes)  # something moved
    for image, label in zip(out[..., 0], labels, strict=True):
        # the bright core (label 2) and the background (0) stay where the image says
        assert image[label == 2].mean() > 0.85
        assert (image[label == 0] < 0.5).mean() > 0.97
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_intensity_changes_leave_labels_and_background_alone():
    images, classes = _slices()
    augmenter = SliceAugmenter(flip=0, rotate_deg=0, scale=0, probability=1.0)
    out, labels = augmenter(images, classes, np.random.default_rng(1))
    np.testing.assert_array_equal(labels, classes)
    assert np.all(out[images == 0] == 0)
    assert not np.allclose(out, images)
    assert out.dtype == np.float32


def test_same_seed_same_batch_and_inputs_untouched():
    images, classes = _slices()
    before = images.copy()
    a = SliceAugmenter()(images, classes, np.random.default_rng(5))
    b = SliceAugmenter()(images, classes, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(images, before)


def test_probability_zero_is_the_identity():
    images, classes = _slices()
    out, labels = SliceAugmenter(probability=0.0)(images, classes, np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(labels, classes)
