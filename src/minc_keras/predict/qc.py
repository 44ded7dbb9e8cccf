"""Quality control of predicted segmentations: a score per scan and the outliers of a cohort.

The score is the model's uncertainty inside the brain (:func:`normalised_entropy`); a scan
whose score is far above the rest of the table is flagged (:func:`flag_outliers`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def flag_outliers(table: pd.DataFrame, column: str = "qc_entropy") -> pd.Series:
    """True for scans whose ``column`` is far (robust z > 3.5) above the others'."""
    values = table[column].astype(float)
    if values.notna().sum() < 5:
        return pd.Series(False, index=table.index)
    median = values.median()
    mad = (values - median).abs().median() * 1.4826 or 1e-9
    return (values - median) / mad > QC_OUTLIER_Z
