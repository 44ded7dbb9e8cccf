"""Does a scan look like the scans a model was trained on? Today: brain only, or a whole head.

A model trained on skull-stripped scans labels skull, scalp and neck as tissue when given a
whole head: litres of "grey matter" that look like a result. The cheapest telling measure is
the volume of the scan's non-zero voxels (what
:func:`~minc_keras.preprocessing.transforms.brain_mask` keeps): a skull-stripped scan holds a
brain, a whole head fills its field of view with skull, scalp, neck and background noise,
two to three times as much (the dev data's figures: ``benchmarks/README.md``, "Whole heads").
Training records the range of its scans (:func:`foreground_ml`), and prediction refuses a
scan far above it (:func:`check_like_training`).
"""

from __future__ import annotations

import numpy as np

from minc_keras.core.errors import DatasetError
from minc_keras.preprocessing.transforms import brain_mask

#: A scan whose foreground exceeds the largest training scan's by more than this factor is
#: refused. Brains differ by about +-20 % between adults; a whole head is 2-3 times a brain.
MAX_FOREGROUND_RATIO = 1.4


def foreground_ml(data: np.ndarray, affine: np.ndarray) -> float:
    """Volume in mL of the voxels :func:`brain_mask` keeps (non-zero and finite).

    Parameters
    ----------
    data : ndarray of shape (I, J, K)
        The scan's intensities.
    affine : ndarray of shape (4, 4)
        Its voxel-to-world affine (mm).

    Examples
    --------
    >>> data = np.zeros((10, 10, 10)); data[2:7, 2:7, 2:7] = 5.0
    >>> round(foreground_ml(data, np.diag([2.0, 2.0, 2.0, 1.0])), 6)
    1.0
    """
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
    return float(brain_mask(np.asarray(data)).sum() * voxel_ml)


def check_like_training(volume_ml: float, trained_ml: list[float] | None) -> None:
    """Refuse a scan whose foreground is far larger than any the model was trained on.

    Parameters
    ----------
    volume_ml : float
        The scan's :func:`foreground_ml`.
    trained_ml : [float, float] or None
        The smallest and largest foreground of the training scans, from the model's
        metadata; None (a model trained before it was recorded) checks nothing.

    Raises
    ------
    DatasetError
        If ``volume_ml`` exceeds :data:`MAX_FOREGROUND_RATIO` times the largest training
        scan's.

    Examples
    --------
    >>> check_like_training(1500.0, [1300.0, 1650.0])
    >>> check_like_training(4300.0, [1300.0, 1650.0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    minc_keras.core.errors.DatasetError: it looks like a whole-head scan...
    """
    if not trained_ml:
        return
    largest = float(max(trained_ml))
    if volume_ml <= MAX_FOREGROUND_RATIO * largest:
        return
    raise DatasetError(
        f"it looks like a whole-head scan (skull and scalp not removed): its non-zero "
        f"voxels fill {volume_ml:,.0f} mL, and the brain-only scans this model was trained on "
        f"at most {largest:,.0f} mL; remove the skull first (a brain extraction tool such as "
        "FSL BET, SynthStrip, HD-BET or BEaST) and segment the brain-only scan"
    )  # the caller names the file
