"""Segmentation losses written with ``keras.ops`` only, registered for ``load_model``.

Targets are one-hot ``(N, H, W, K)`` for ``K`` softmax channels, or ``(N, H, W, 1)`` in
``{0, 1}`` for a single sigmoid channel. Integer class maps (``(N, H, W)`` or
``(N, H, W, 1)`` against ``K > 1`` channels) are one-hot encoded on the fly.

Each loss returns one value per sample, ``(N,)``, so Keras applies sample weights and its
usual mean over the batch.
"""

from __future__ import annotations

import keras
from keras import ops

from minc_keras.errors import UsageError

#: Names :func:`get_loss` accepts (``"dice+ce"`` and ``"dice-ce"`` also mean ``dice_ce``).
LOSS_NAMES = ("categorical_crossentropy", "binary_crossentropy", "dice", "dice_ce")

#: Default additive smoothing of the Dice ratio, in voxels.
SMOOTH = 1.0


def _dense_targets(y_true, y_pred):
    """``y_true`` as a float one-hot tensor of ``y_pred``'s shape and dtype."""
    y_true = ops.convert_to_tensor(y_true)
    channels = y_pred.shape[-1]
    if channels > 1 and (len(y_true.shape) == len(y_pred.shape) - 1 or y_true.shape[-1] == 1):
        labels = ops.reshape(y_true, ops.shape(y_pred)[:-1])
        return ops.one_hot(ops.cast(labels, "int32"), channels, dtype=y_pred.dtype)
    return ops.cast(y_true, y_pred.dtype)


def dice_loss(y_true, y_pred, smooth: float = SMOOTH):
    """Soft Dice loss: 1 - mean over classes of each sample's soft Dice.

    ``dice_c = (2 * sum(t_c * p_c) + smooth) / (sum(t_c) + sum(p_c) + smooth)``, sums over
    the spatial axes of one sample.

    Parameters
    ----------
    y_true : tensor of shape (N, H, W, K)
        One-hot targets (or ``(N, H, W, 1)`` binary targets for one sigmoid channel).
    y_pred : tensor of shape (N, H, W, K)
        Probabilities.
    smooth : float
        Added to numerator and denominator: an absent class predicted absent scores 1.

    Returns
    -------
    tensor of shape (N,)
        0 for a perfect prediction, close to 1 for a completely wrong one.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = _dense_targets(y_true, y_pred)
    axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


def crossentropy(y_true, y_pred):
    """Per-sample mean cross-entropy: binary for one channel, categorical for more.

    Parameters
    ----------
    y_true, y_pred : tensor of shape (N, H, W, K)

    Returns
    -------
    tensor of shape (N,)
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = _dense_targets(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        pixel = keras.losses.binary_crossentropy(y_true, y_pred)
    else:
        pixel = keras.losses.categorical_crossentropy(y_true, y_pred)
    return ops.mean(pixel, axis=tuple(range(1, len(pixel.shape))))


def dice_ce_loss(y_true, y_pred, smooth: float = SMOOTH):
    """Soft Dice loss plus cross-entropy (binary when the last axis has size 1).

    Parameters
    ----------
    y_true, y_pred : tensor of shape (N, H, W, K)
    smooth : float
        Dice smoothing, see :func:`dice_loss`.

    Returns
    -------
    tensor of shape (N,)
        ``dice_loss(y_true, y_pred) + crossentropy(y_true, y_pred)``.
    """
    return dice_loss(y_true, y_pred, smooth) + crossentropy(y_true, y_pred)


class _SmoothedLoss(keras.losses.Loss):
    """A per-sample loss with a Dice smoothing term, serialisable through ``get_config``."""

    def __init__(
        self,
        smooth: float = SMOOTH,
        name: str | None = None,
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ) -> None:
        if not isinstance(smooth, (int, float)) or smooth < 0:
            raise UsageError(f"Dice smoothing must be a number >= 0, got {smooth!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = float(smooth)

    def get_config(self) -> dict:
        """Configuration for serialisation."""
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="minc_keras")
class DiceLoss(_SmoothedLoss):
    """Soft Dice loss, see :func:`dice_loss`.

    Parameters
    ----------
    smooth : float
        Additive smoothing (default 1 voxel).
    name, reduction, dtype
        As for :class:`keras.losses.Loss`.
    """

    def __init__(self, smooth: float = SMOOTH, name: str = "dice", **kwargs) -> None:
        super().__init__(smooth=smooth, name=name, **kwargs)

    def call(self, y_true, y_pred):
        """Per-sample Dice loss, shape ``(N,)``."""
        return dice_loss(y_true, y_pred, self.smooth)


@keras.saving.register_keras_serializable(package="minc_keras")
class DiceCELoss(_SmoothedLoss):
    """Soft Dice loss plus cross-entropy, see :func:`dice_ce_loss`.

    Parameters
    ----------
    smooth : float
        Additive smoothing of the Dice term (default 1 voxel).
    name, reduction, dtype
        As for :class:`keras.losses.Loss`.
    """

    def __init__(self, smooth: float = SMOOTH, name: str = "dice_ce", **kwargs) -> None:
        super().__init__(smooth=smooth, name=name, **kwargs)

    def call(self, y_true, y_pred):
        """Per-sample Dice + cross-entropy, shape ``(N,)``."""
        return dice_ce_loss(y_true, y_pred, self.smooth)


def get_loss(name: str) -> keras.losses.Loss:
    """The loss called ``name`` (the workshop's ``--loss``).

    Parameters
    ----------
    name : str
        ``categorical_crossentropy``, ``binary_crossentropy``, ``dice`` or ``dice_ce``
        (also ``dice+ce``); case and ``-``/``_`` do not matter.

    Returns
    -------
    keras.losses.Loss

    Raises
    ------
    UsageError
        For any other name.

    Examples
    --------
    >>> get_loss("Dice+CE").name
    'dice_ce'
    """
    key = str(name).strip().lower().replace("-", "_").replace("+", "_")
    factories = {
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
        "dice": DiceLoss,
        "dice_ce": DiceCELoss,
    }
    if key not in factories:
        raise UsageError(
            f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)} (or dice+ce)"
        )
    return factories[key]()
