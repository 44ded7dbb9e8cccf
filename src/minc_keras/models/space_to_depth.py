"""Fold pixel blocks into channels and back: the U-Net's half-resolution stem.

:class:`SpaceToDepth` turns each ``block x block`` square of pixels into ``block ** 2``
channels of one pixel (no information is lost); :class:`DepthToSpace` is its inverse.
A U-Net that starts with ``SpaceToDepth(2)`` and ends with ``DepthToSpace(2)`` runs every
level at half the resolution and still predicts each pixel of the slice, from the
features of its 2 x 2 block. On a CPU that is where the time goes: the full-resolution
convolutions with few channels are bound by memory traffic, not arithmetic. Both layers
are written with ``keras.ops`` and follow torch's ``pixel_unshuffle`` / ``pixel_shuffle``
channel order, in either data format.
"""

from __future__ import annotations

import keras
from keras import ops


def _check_format(data_format: str) -> str:
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(
            f"data_format must be channels_first or channels_last, got {data_format!r}")
    return data_format


class _BlockLayer(keras.layers.Layer):
    """Shared part of the two layers: options, layout handling and serialisation."""

    #: Whether the layer folds blocks into channels (or unfolds them).
    folds = True

    def __init__(self, block: int = 2, data_format: str = "channels_last", **kwargs) -> None:
        super().__init__(**kwargs)
        self.block = int(block)
        self.data_format = _check_format(data_format)

    def call(self, inputs):
        """Fold or unfold the blocks of ``inputs`` (in channels-first order inside)."""
        rearrange = _fold if self.folds else _unfold
        if self.data_format == "channels_first":
            return rearrange(inputs, self.block)
        x = rearrange(ops.transpose(inputs, (0, 3, 1, 2)), self.block)
        return ops.transpose(x, (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        """Spatial sizes divided (folding) or multiplied by ``block``; channels the reverse."""
        return _resized(input_shape, self.data_format,
                        1 / self.block if self.folds else self.block)

    def get_config(self) -> dict:
        """Configuration for serialisation."""
        return {**super().get_config(), "block": self.block, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="minc_keras")
class SpaceToDepth(_BlockLayer):
    """``(N, H, W, C) -> (N, H/b, W/b, C*b*b)``: each b x b block becomes channels.

    Parameters
    ----------
    block : int
        Side of the folded block; height and width must be multiples of it.
    data_format : {"channels_last", "channels_first"}
        Layout of the input (and output): ``(N, H, W, C)`` or ``(N, C, H, W)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> y = keras.ops.convert_to_numpy(SpaceToDepth(2)(x))
    >>> y.shape, y[0, 0, 0].tolist()
    ((1, 2, 2, 4), [0.0, 1.0, 4.0, 5.0])
    """

    folds = True


@keras.saving.register_keras_serializable(package="minc_keras")
class DepthToSpace(_BlockLayer):
    """``(N, H, W, C*b*b) -> (N, H*b, W*b, C)``: the inverse of :class:`SpaceToDepth`.

    Parameters
    ----------
    block : int
        Side of the unfolded block; the channels must be a multiple of ``block ** 2``.
    data_format : {"channels_last", "channels_first"}
    """

    folds = False


def _fold(x, b: int):
    """Fold the b x b blocks of ``(N, C, H, W)`` features into channels."""
    _, c, h, w = ops.shape(x)
    x = ops.reshape(x, (-1, c, h // b, b, w // b, b))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4))  # (N, C, b, b, H/b, W/b): torch's order
    return ops.reshape(x, (-1, c * b * b, h // b, w // b))


def _unfold(x, b: int):
    """Unfold the channels of ``(N, C*b*b, H, W)`` features into b x b blocks of pixels."""
    _, cbb, h, w = ops.shape(x)
    c = cbb // (b * b)
    x = ops.reshape(x, (-1, c, b, b, h, w))
    x = ops.transpose(x, (0, 1, 4, 2, 5, 3))  # (N, C, H, b, W, b)
    return ops.reshape(x, (-1, c, h * b, w * b))


def _resized(shape, data_format: str, factor: float) -> tuple:
    """``shape`` with its spatial sizes times ``factor`` and channels divided by its square."""
    n, *rest = shape
    if data_format == "channels_first":
        c, h, w = rest
    else:
        h, w, c = rest
    h, w, c = _times(h, factor), _times(w, factor), _times(c, 1 / factor**2)
    return (n, c, h, w) if data_format == "channels_first" else (n, h, w, c)


def _times(size: int | None, factor: float) -> int | None:
    return None if size is None else round(size * factor)
