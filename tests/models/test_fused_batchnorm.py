"""FusedBatchNormalization computes what Keras' BatchNormalization computes, faster."""

import keras
import numpy as np
import pytest
import torch

from minc_keras.models import FusedBatchNormalization, build_unet

SHAPE = (4, 5, 12, 10)  # channels-first, the U-Net's layout under torch


def _pair(axis=1, **kwargs):
    """A Keras layer and a fused layer with the same random weights and moving statistics."""
    rng = np.random.default_rng(1)
    plain = keras.layers.BatchNormalization(axis=axis, momentum=0.9, **kwargs)
    fused = FusedBatchNormalization(axis=axis, momentum=0.9, **kwargs)
    shape = SHAPE if axis == 1 else (4, 12, 10, 5)
    for layer in (plain, fused):
        layer.build(shape)
    weights = [rng.normal(size=5).astype("float32"), rng.normal(size=5).astype("float32"),
               rng.normal(size=5).astype("float32"),
               rng.uniform(0.5, 2.0, size=5).astype("float32")]
    weights = weights[: len(plain.get_weights())]
    plain.set_weights(weights)
    fused.set_weights(weights)
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    return plain, fused, x


def _train_step(layer, x):
    """Output, input gradient, weight gradients and weights after one training call."""
    inputs = torch.tensor(x, requires_grad=True)
    outputs = layer(inputs, training=True)
    ramp = torch.linspace(-1.0, 1.0, outputs.numel()).reshape(outputs.shape)
    (outputs * ramp).sum().backward()
    grads = [w.value.grad.numpy().copy() for w in layer.trainable_weights]
    return outputs.detach().numpy(), inputs.grad.numpy(), grads, layer.get_weights()


@pytest.mark.parametrize("options", [{}, {"center": False}, {"scale": False}])
def test_training_matches_keras(options):
    plain, fused, x = _pair(**options)
    before = fused.get_weights()
    expected, actual = _train_step(plain, x), _train_step(fused, x)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-4, atol=1e-5)
    for got, want in zip(actual[2], expected[2], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # moving statistics: Keras' momentum and biased batch variance
    for got, want in zip(actual[3], expected[3], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(actual[3][-1], before[-1])  # the statistics did move


def test_inference_matches_keras_and_uses_moving_statistics():
    plain, fused, x = _pair()
    want = keras.ops.convert_to_numpy(plain(x, training=False))
    got = keras.ops.convert_to_numpy(fused(x, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    mean, variance = plain.get_weights()[2:]
    gamma, beta = plain.get_weights()[:2]
    by_hand = ((x - mean[:, None, None]) / np.sqrt(variance[:, None, None] + 1e-3)
               * gamma[:, None, None] + beta[:, None, None])
    np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-4)


def test_channels_last_falls_back_to_keras():
    plain, fused, x = _pair(axis=-1)
    np.testing.assert_allclose(_train_step(fused, x)[0], _train_step(plain, x)[0], atol=1e-6)


def test_bfloat16_features_are_normalised_in_float32():
    plain, fused, x = _pair(dtype="mixed_bfloat16")
    got = fused(torch.tensor(x).bfloat16(), training=True)
    assert got.dtype == torch.bfloat16
    want = plain(torch.tensor(x).bfloat16(), training=True)
    np.testing.assert_allclose(got.detach().float().numpy(), want.detach().float().numpy(),
                               atol=0.05)
    assert fused.moving_mean.dtype == "float32"


def test_unet_saves_and_loads_with_fused_layers(tmp_path):
    model = build_unet((16, 16, 1), 3, nK=[4], depth=2)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    path = tmp_path / "unet.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
