"""What a Segmenter averages, checked by value: the flipped pass and the views."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from minc_keras.inference.probabilities import predict_probabilities
from minc_keras.inference.segmenter import Segmenter

VIEWS = ("axial", "coronal", "sagittal")


def _network(seed: int) -> keras.Model:
    """Three classes from a 3x3 convolution with random, lopsided weights (no symmetry)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inputs)
    x = keras.layers.Conv2D(3, 3, padding="same",
                            bias_initializer=keras.initializers.RandomNormal(seed=seed))(x)
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


def _info(view: str) -> dict:
    return {"view": view, "multiple": 1, "class_values": [0, 1, 2],
            "class_names": ["background", "a", "b"]}


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """A lopsided volume: brighter to one side along every axis, zero at the rim."""
    rng = np.random.default_rng(3)
    x, y, z = np.meshgrid(*(np.linspace(0, 1, n) for n in (11, 9, 7)), indexing="ij")
    image = (1 + 2 * x + y + 0.5 * z + 0.2 * rng.random(x.shape)).astype(np.float32)
    image[0], image[:, -1] = 0.0, 0.0
    return image


def test_tta_is_the_mean_of_the_plain_and_the_flipped_back_pass(volume):
    model = _network(0)
    plain = predict_probabilities(model, volume, view="axial")
    flipped = predict_probabilities(model, np.ascontiguousarray(volume[::-1]), view="axial")
    assert not np.allclose(plain, flipped[::-1], atol=1e-3)  # the network is not symmetric
    got = Segmenter([(model, _info("axial"))], tta=True).probabilities(volume)
    np.testing.assert_allclose(got, (plain + flipped[::-1]) / 2, rtol=1e-5, atol=1e-6)
    without = Segmenter([(model, _info("axial"))]).probabilities(volume)
    np.testing.assert_allclose(without, plain, rtol=1e-5, atol=1e-6)


def test_a_multi_view_prediction_is_the_mean_of_its_members(volume):
    members = [(_network(seed), _info(view)) for seed, view in enumerate(VIEWS)]
    singles = [Segmenter([member]).probabilities(volume) for member in members]
    for a, b in itertools.pairwise(singles):
        assert not np.allclose(a, b, atol=1e-3)  # each member says something else
    got = Segmenter(members).probabilities(volume)
    np.testing.assert_allclose(got, np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    tta = [Segmenter([member], tta=True).probabilities(volume) for member in members]
    np.testing.assert_allclose(Segmenter(members, tta=True).probabilities(volume),
                               np.mean(tta, axis=0), rtol=1e-5, atol=1e-6)


def test_class_offsets_apply_once_to_the_average(volume):
    """The first member's offsets scale the averaged probabilities (once, not per member)."""
    members = [(_network(seed), _info(view)) for seed, view in enumerate(VIEWS[:2])]
    offsets = [0.0, -1.0, 0.5]
    members[0] = (members[0][0], {**members[0][1], "class_offsets": offsets})
    plain = Segmenter(members, calibrated=False).probabilities(volume)
    shifted = plain * np.exp(offsets)
    shifted /= shifted.sum(-1, keepdims=True)
    np.testing.assert_allclose(Segmenter(members).probabilities(volume), shifted,
                               rtol=1e-4, atol=1e-6)


def test_tta_swaps_the_paired_channels_of_the_flipped_pass(volume):
    model = _network(0)
    plain = predict_probabilities(model, volume, view="axial")
    flipped = predict_probabilities(model, np.ascontiguousarray(volume[::-1]), view="axial")
    info = {**_info("axial"), "class_names": ["background", "Left a", "Right a"],
            "mirror_classes": [0, 2, 1]}
    got = Segmenter([(model, info)], tta=True).probabilities(volume)
    np.testing.assert_allclose(got, (plain + flipped[::-1][..., [0, 2, 1]]) / 2,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, (plain + flipped[::-1]) / 2, atol=1e-3)
