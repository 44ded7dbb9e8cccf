"""Quality control of predicted segmentations: a score per scan and the outliers of a cohort.

The score is the model's uncertainty inside the brain (:func:`normalised_entropy`); a scan
whose score is far above the rest of the table is flagged (:func:`flag_outliers`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation

#: A scan whose QC score is this many robust standard deviations from the median is flagged.
QC_OUTLIER_Z = 3.5


def normalised_entropy(probs: np.ndarray, where: np.ndarray) -> float:
    """Mean entropy of the class probabilities in ``where``, divided by its maximum.

    0 means every voxel was classified with certainty, 1 means uniform guessing.

    >>> p = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> round(normalised_entropy(p, np.array([True, True])), 3)
    0.5
    """
    if not where.any():
        return float("nan")
    p = probs[where]
    if p.shape[-1] == 1:
        p = np.concatenate([1 - p, p], axis=-1)
    p = np.clip(p, 1e-7, 1.0)
    entropy = -(p * np.log(p)).sum(axis=-1) / np.log(p.shape[-1])
    return float(entropy.mean())


def robust_scale(values: np.ndarray) -> float:
    """A robust standard deviation of ``values`` that is never 0.

    The median absolute deviation, scaled to a normal's standard deviation, floored at
    5 % of the median's size and at 0.001: in a cohort whose scores are all equal, a
    scan a hair above the rest is not an outlier.

    >>> round(robust_scale(np.array([0.2, 0.2, 0.2, 0.2, 0.2001])), 6)
    0.01
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    mad = float(median_abs_deviation(values, scale="normal")) if values.size else 0.0
    median = float(np.median(values)) if values.size else 0.0
    return max(mad, 0.05 * abs(median), 1e-3)


def flag_outliers(table: pd.DataFrame, column: str = "qc_entropy") -> pd.Series:
    """True for scans whose ``column`` is far (robust z > 3.5) above the others'.

    The robust z is the distance above the median in units of :func:`robust_scale`;
    with fewer than five scores no scan is flagged.
    """
    values = table[column].astype(float)
    if values.notna().sum() < 5:
        return pd.Series(False, index=table.index)
    median = values.median()
    return (values - median) / robust_scale(values.to_numpy()) > QC_OUTLIER_Z
