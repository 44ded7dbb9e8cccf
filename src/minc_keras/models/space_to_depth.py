"""Fold pixel blocks into channels and back: the U-Net's half-resolution stem.

:class:`SpaceToDepth` turns each ``block x block`` square of pixels into ``block ** 2``
channels of one pixel (no information is lost); :class:`DepthToSpace` is its inverse.
Both take 2-D slices ``(N, H, W, C)`` and 3-D volumes ``(N, X, Y, Z, C)`` alike (a 3-D
block of ``block ** 3`` voxels).
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
        rank = len(inputs.shape)
        x = rearrange(ops.transpose(inputs, (0, rank - 1, *range(1, rank - 1))), self.block)
        return ops.transpose(x, (0, *range(2, rank), 1))

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

    A volume ``(N, X, Y, Z, C)`` becomes ``(N, X/b, Y/b, Z/b, C*b**3)`` likewise.

    Parameters
    ----------
    block : int
        Side of the folded block; every spatial size must be a multiple of it.
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
    """Fold the blocks of ``(N, C, *spatial)`` features (2 or 3 spatial axes) into channels."""
    _, c, *spatial = ops.shape(x)
    n = len(spatial)
    x = ops.reshape(x, (-1, c, *[v for size in spatial for v in (size // b, b)]))
    # (N, C, b, b[, b], H/b, W/b[, D/b]): torch's pixel_unshuffle order in 2-D
    x = ops.transpose(x, (0, 1, *range(3, 2 + 2 * n, 2), *range(2, 2 + 2 * n, 2)))
    return ops.reshape(x, (-1, c * b**n, *[size // b for size in spatial]))


def _unfold(x, b: int):
    """Unfold the channels of ``(N, C*b**n, *spatial)`` features into blocks of pixels."""
    _, cb, *spatial = ops.shape(x)
    n = len(spatial)
    c = cb // b**n
    x = ops.reshape(x, (-1, c, *[b] * n, *spatial))
    # (N, C, H, b, W, b[, D, b])
    x = ops.transpose(x, (0, 1, *[a for i in range(n) for a in (2 + n + i, 2 + i)]))
    return ops.reshape(x, (-1, c, *[size * b for size in spatial]))


def _resized(shape, data_format: str, factor: float) -> tuple:
    """``shape`` with its spatial sizes times ``factor``, channels divided by the block volume."""
    n, *rest = shape
    if data_format == "channels_first":
        c, *spatial = rest
    else:
        *spatial, c = rest
    c = _times(c, 1 / factor ** len(spatial))
    spatial = [_times(size, factor) for size in spatial]
    return (n, c, *spatial) if data_format == "channels_first" else (n, *spatial, c)


def _times(size: int | None, factor: float) -> int | None:
    return None if size is None else round(size * factor)
