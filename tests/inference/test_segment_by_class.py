"""Putting probabilities back one class at a time gives what the whole array gives."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from minc_keras.inference.segment import segment_volume
from minc_keras.inference.segmenter import Segmenter
from minc_keras.io import Volume
from minc_keras.predict.qc import normalised_entropy

CLASSES = 12


def _network(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="tanh")(inputs)
    x = keras.layers.Conv2D(CLASSES, 3, padding="same",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=2.0,
                                                                                seed=seed),
                            bias_initializer=keras.initializers.RandomNormal(seed=seed))(x)
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


def _scan() -> Volume:
    rng = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (20, 24, 16)], indexing="ij"))
    inside = (grid ** 2).sum(0) < 0.8
    data = np.where(inside, 50 + 50 * grid[0] + 10 * rng.random(inside.shape), 0)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    return Volume(data.astype(np.float32), affine)


@pytest.fixture(scope="module")
def network():
    return _network()


@pytest.mark.parametrize(("view", "voxel_mm"), [
    ("axial", None), ("coronal", None), ("sagittal", None),  # slice by slice
    ("axial", [1.6, 1.3, 0.8]),  # resampled: class by class
])
@pytest.mark.parametrize("tta", [False, True])
def test_class_by_class_equals_the_whole_probabilities(network, view, voxel_mm, tta):
    info = {"view": view, "multiple": 1, "class_values": [0, *range(4, 4 + 3 * 11, 3)],
            "voxel_sizes_mm": voxel_mm, "class_names": ["background", *(
                f"{side} s{k}" for k in range(5) for side in ("Left", "Right")), "middle"],
            "mirror_classes": [0, *(k + 1 + (1 if k % 2 == 0 else -1) for k in range(10)), 11]}
    segmenter = Segmenter([(network, info)], tta=tta)
    scan = _scan()
    whole = segment_volume(segmenter, scan)
    parts = segment_volume(segmenter, scan, probabilities=False)
    assert parts.probabilities is None
    assert len(np.unique(whole.classes)) > 4  # many classes take part
    np.testing.assert_array_equal(parts.classes, whole.classes)
    np.testing.assert_array_equal(parts.labels, whole.labels)
    np.testing.assert_array_equal(np.bincount(parts.classes.ravel(), minlength=CLASSES),
                                  np.bincount(whole.classes.ravel(), minlength=CLASSES))
    expected = normalised_entropy(whole.probabilities, whole.classes > 0)
    assert abs(parts.qc_entropy - expected) < 1e-6
    chosen = segment_volume(segmenter, scan, probabilities=[0, 5])
    assert sorted(chosen.class_maps) == [0, 5]
    for c in (0, 5):
        np.testing.assert_allclose(chosen.class_maps[c], whole.probabilities[..., c], atol=1e-7)


def test_one_view_without_resampling_goes_slice_by_slice(network, monkeypatch):
    info = {"view": "axial", "multiple": 1, "class_values": list(range(CLASSES))}
    segmenter = Segmenter([(network, info)], tta=True)
    assert segmenter.streams
    monkeypatch.setattr(Segmenter, "probabilities", None)  # the whole array is never made
    result = segment_volume(segmenter, _scan(), probabilities=[3])
    assert result.probabilities is None
    assert sorted(result.class_maps) == [3]
    assert not Segmenter([(network, info)] * 2).streams
    assert not Segmenter([(network, {**info, "view": "sagittal"})], tta=True).streams
