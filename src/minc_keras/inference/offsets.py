"""Per-class probability offsets: a shift of the class priors, applied after averaging.

The offsets are fitted after training (:mod:`minc_keras.training.calibration`) and stored
in the model; every prediction applies them here.
"""

from __future__ import annotations

import numpy as np


def apply_offsets(probabilities: np.ndarray, offsets: np.ndarray | list[float] | None
                  ) -> np.ndarray:
    """``probabilities * exp(offsets)`` renormalised over the last axis.

    Parameters
    ----------
    probabilities : ndarray of shape (..., C)
    offsets : sequence of C floats, optional
        ``None`` (or all zero) returns ``probabilities`` unchanged.

    Examples
    --------
    >>> p = np.array([[0.5, 0.5]], np.float32)
    >>> apply_offsets(p, [0.0, np.log(3.0)]).round(3).tolist()
    [[0.25, 0.75]]
    """
    if offsets is None or not np.any(offsets):
        return probabilities
    factors = np.exp(np.asarray(offsets, np.float32))
    scaled = probabilities * factors
    return scaled / np.maximum(scaled.sum(axis=-1, keepdims=True), np.float32(1e-12))
