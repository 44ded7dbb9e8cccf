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

from minc_keras.core.errors import UsageError

#: Names :func:`get_loss` accepts (``"dice+ce"`` and ``"dice-ce"`` also mean ``dice_ce``).
LOSS_NAMES = ("categorical_crossentropy", "binary_crossentropy", "dice", "dice_ce", "dice_wce")

#: Added to a class's share of the batch before weighting it by ``1 / sqrt(share)``: a
#: class absent from the batch gets a finite weight.
CLASS_SHARE_FLOOR = 1e-3

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


def class_balance_weights(y_true):
    """Per-pixel weights ``1 / sqrt(share of the pixel's class in the batch)``, mean 1.

    A class that covers 1 % of the batch, such as the ventricles, weighs 10x more per
    pixel than one covering all of it would; the weights are scaled so that their mean
    over the batch's pixels is 1, which keeps the loss's size.

    Parameters
    ----------
    y_true : tensor of shape (N, H, W, K)
        One-hot targets, ``K > 1``.

    Returns
    -------
    tensor of shape (N, H, W)
    """
    y_true = ops.convert_to_tensor(y_true)
    share = ops.mean(y_true, axis=tuple(range(len(y_true.shape) - 1)))
    weight = 1.0 / ops.sqrt(share + CLASS_SHARE_FLOOR)
    weight = weight / ops.sum(share * weight)
    return ops.sum(y_true * weight, axis=-1)


def crossentropy(y_true, y_pred, balanced: bool = False):
    """Per-sample mean cross-entropy: binary for one channel, categorical for more.

    Parameters
    ----------
    y_true, y_pred : tensor of shape (N, H, W, K)
    balanced : bool
        Weight each pixel by :func:`class_balance_weights` (categorical only).

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
        if balanced:
            pixel = pixel * class_balance_weights(y_true)
    return ops.mean(pixel, axis=tuple(range(1, len(pixel.shape))))


def dice_ce_loss(y_true, y_pred, smooth: float = SMOOTH, balanced: bool = False):
    """Soft Dice loss plus cross-entropy (binary when the last axis has size 1).

    Parameters
    ----------
    y_true, y_pred : tensor of shape (N, H, W, K)
    smooth : float
        Dice smoothing, see :func:`dice_loss`.
    balanced : bool
        Class-balanced cross-entropy, see :func:`crossentropy`.

    Returns
    -------
    tensor of shape (N,)
        ``dice_loss(y_true, y_pred) + crossentropy(y_true, y_pred)``.
    """
    return dice_loss(y_true, y_pred, smooth) + crossentropy(y_true, y_pred, balanced)


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
    balanced : bool
        Weight the cross-entropy's pixels by the inverse square root of their class's
        share of the batch (``dice_wce``), so that a small class such as the ventricles
        is learnt early in a short training.
    name, reduction, dtype
        As for :class:`keras.losses.Loss`.
    """

    def __init__(self, smooth: float = SMOOTH, balanced: bool = False, name: str = "dice_ce",
                 **kwargs) -> None:
        super().__init__(smooth=smooth, name=name, **kwargs)
        self.balanced = bool(balanced)

    def call(self, y_true, y_pred):
        """Per-sample Dice + cross-entropy, shape ``(N,)``."""
        return dice_ce_loss(y_true, y_pred, self.smooth, self.balanced)

    def get_config(self) -> dict:
        """Configuration for serialisation."""
        return {**super().get_config(), "balanced": self.balanced}


def get_loss(name: str) -> keras.losses.Loss:
    """The loss called ``name`` (the workshop's ``--loss``).

    Parameters
    ----------
    name : str
        ``categorical_crossentropy``, ``binary_crossentropy``, ``dice``, ``dice_ce``
        (also ``dice+ce``) or ``dice_wce`` (Dice + class-balanced cross-entropy); case and
        ``-``/``_`` do not matter.

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
        "dice_wce": lambda: DiceCELoss(balanced=True, name="dice_wce"),
    }
    if key not in factories:
        raise UsageError(
            f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)} (or dice+ce)"
        )
    return factories[key]()
