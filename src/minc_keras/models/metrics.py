"""Segmentation metrics: a dataset-level Dice for Keras, and Dice per class in numpy."""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
from keras import ops

from minc_keras.core.errors import UsageError

_ACCURACY_ALIASES = ("accuracy", "acc", "categorical_accuracy", "binary_accuracy")


@keras.saving.register_keras_serializable(package="minc_keras")
class DiceScore(keras.metrics.Metric):
    """Dice of one class over everything seen since the last reset.

    Predicted and true masks come from the argmax over the channels (from
    ``y_pred > threshold`` and ``y_true > 0.5`` for a single sigmoid channel, where class 1
    is the foreground). Intersection and sizes are summed over all batches, so the result
    is the Dice of the whole dataset, not the mean of per-batch values. With both masks
    empty the Dice is 1.

    Parameters
    ----------
    class_id : int
        The class (output channel) to score; 1 is the foreground of a sigmoid output.
    threshold : float
        Decision threshold for a single sigmoid channel.
    name : str, optional
        Default ``"dice_<class_id>"``.
    dtype : str, optional
        Dtype of the accumulators (default float32).
    """

    def __init__(
        self, class_id: int = 1, threshold: float = 0.5, name: str | None = None, dtype=None
    ) -> None:
        if isinstance(class_id, bool) or not isinstance(class_id, int) or class_id < 0:
            raise UsageError(f"DiceScore class_id must be an integer >= 0, got {class_id!r}")
        super().__init__(name=name or f"dice_{class_id}", dtype=dtype)
        self.class_id = class_id
        self.threshold = float(threshold)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.predicted = self.add_variable(shape=(), initializer="zeros", name="predicted")
        self.actual = self.add_variable(shape=(), initializer="zeros", name="actual")

    def _masks(self, y_true, y_pred):
        channels = y_pred.shape[-1]
        if channels == 1:
            if self.class_id > 1:
                raise UsageError(
                    f"{self.name} scores class {self.class_id}, but a single "
                    f"sigmoid channel has only classes 0 and 1"
                )
            pred = y_pred[..., 0] > self.threshold
            true = ops.reshape(y_true, ops.shape(pred)) > 0.5
            if self.class_id == 0:
                pred, true = ops.logical_not(pred), ops.logical_not(true)
            return true, pred
        pred = ops.argmax(y_pred, axis=-1) == self.class_id
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == channels:
            true = ops.argmax(y_true, axis=-1) == self.class_id
        else:  # integer class map, (N, H, W) or (N, H, W, 1)
            true = ops.cast(ops.reshape(y_true, ops.shape(pred)), "int32") == self.class_id
        return true, pred

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add one batch's intersection and mask sizes.

        Parameters
        ----------
        y_true : tensor of shape (N, H, W, K)
            One-hot targets, ``{0, 1}`` targets for one channel, or class indices.
        y_pred : tensor of shape (N, H, W, K)
            Probabilities.
        sample_weight : tensor of shape (N,) or (N, H, W), optional
            Weight of each sample or pixel.
        """
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        true, pred = self._masks(y_true, y_pred)
        true = ops.cast(true, self.dtype)
        pred = ops.cast(pred, self.dtype)
        weight = ops.ones_like(true)
        if sample_weight is not None:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), self.dtype)
            while len(weight.shape) < len(true.shape):
                weight = ops.expand_dims(weight, -1)
        self.intersection.assign_add(ops.sum(true * pred * weight))
        self.predicted.assign_add(ops.sum(pred * weight))
        self.actual.assign_add(ops.sum(true * weight))

    def result(self):
        """``2 |P & T| / (|P| + |T|)``, or 1 when both are empty."""
        total = self.predicted + self.actual
        return ops.where(total > 0, 2.0 * self.intersection / ops.maximum(total, 1e-12), 1.0)

    def get_config(self) -> dict:
        """Configuration for serialisation."""
        return {**super().get_config(), "class_id": self.class_id, "threshold": self.threshold}


def make_metrics(num_classes: int, metric: str = "categorical_accuracy") -> list:
    """The accuracy metric plus a :class:`DiceScore` for every class but background.

    Parameters
    ----------
    num_classes : int
        Output channels; 1 means one sigmoid channel (binary target).
    metric : str
        The workshop's ``--metric``: ``categorical_accuracy`` (``accuracy``, ``acc``;
        binary accuracy for one channel), ``binary_accuracy`` or any Keras metric name.

    Returns
    -------
    list
        ``[accuracy, dice_1, ..., dice_{K-1}]`` (``[binary_accuracy, dice_1]`` for K=1).

    Raises
    ------
    UsageError
        For ``num_classes < 1`` or an unknown metric name.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    key = str(metric).strip().lower()
    if key in _ACCURACY_ALIASES:
        if num_classes == 1 or key == "binary_accuracy":
            accuracy = keras.metrics.BinaryAccuracy(name="binary_accuracy")
        else:
            accuracy = keras.metrics.CategoricalAccuracy(name="categorical_accuracy")
    else:
        try:
            accuracy = keras.metrics.get(metric)
        except (ValueError, TypeError):
            raise UsageError(
                f"unknown metric {metric!r}; expected categorical_accuracy, "
                f"binary_accuracy or another Keras metric name"
            ) from None
    dice = [DiceScore(c) for c in range(1, max(num_classes, 2))]
    return [accuracy, *dice]


def dice_per_class(
    pred_labels: np.ndarray, true_labels: np.ndarray, classes: Iterable[int]
) -> dict[int, float]:
    """Dice of each class between two label arrays (1.0 where both lack the class).

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape (e.g. (X, Y, Z))
        Predicted and true class indices.
    classes : iterable of int
        Classes to score.

    Returns
    -------
    dict of int to float
        ``2 |P & T| / (|P| + |T|)`` per class.

    Raises
    ------
    ValueError
        If the arrays differ in shape.

    Examples
    --------
    >>> pred = np.array([[0, 1, 1], [2, 2, 0]])
    >>> true = np.array([[0, 1, 2], [2, 2, 2]])
    >>> dice_per_class(pred, true, [1, 2, 3])
    {1: 0.6666666666666666, 2: 0.6666666666666666, 3: 1.0}
    """
    pred = np.asarray(pred_labels)
    true = np.asarray(true_labels)
    if pred.shape != true.shape:
        raise ValueError(
            f"predicted labels have shape {pred.shape}, true labels "
            f"{true.shape}; they must be on the same grid"
        )
    scores = {}
    for c in classes:
        p, t = pred == c, true == c
        total = np.count_nonzero(p) + np.count_nonzero(t)
        both = np.count_nonzero(p & t)
        scores[int(c)] = float(2.0 * both / total) if total else 1.0
    return scores
