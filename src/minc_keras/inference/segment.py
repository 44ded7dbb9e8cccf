"""Segment one new scan with a trained model, in the scan's own grid.

The scan is brought to what the model expects by the model's
:class:`~minc_keras.preprocessing.preprocessor.Preprocessor` — RAS axis order, the
training voxel size, normalised intensities, cropped to the head — then the class
probabilities are put back onto the scan's grid by its inverse and turned into labels
there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from minc_keras.inference.probabilities import probabilities_to_classes
from minc_keras.inference.segmenter import Segmenter
from minc_keras.io import Volume

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """Result of segmenting one scan (arrays in the scan's own grid)."""

    labels: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray


def segment_volume(segmenter: Segmenter, volume: Volume, *,
                   batch_size: int = 8) -> Segmentation:
    """Labels, probabilities and class indices of ``volume`` in its own grid.

    The scan goes through the model's own preprocessing
    (:attr:`~minc_keras.models.info.ModelInfo.preprocessor`: the normalisation, crop
    margin and voxel size stored at training) forward, and the probabilities through its
    inverse.

    Parameters
    ----------
    segmenter : Segmenter
        A model (or multi-view ensemble) saved by ``minc-keras train``.
    volume : Volume
        The scan, any orientation and voxel size.
    batch_size : int
        Slices per forward pass.

    Returns
    -------
    Segmentation
        ``labels`` holds the original label values, ``probabilities`` has shape
        ``volume.shape + (C,)``.
    """
    info = segmenter.info
    preprocessor = info.preprocessor
    prepared = preprocessor.forward(volume.data, volume.affine)
    probs = np.asarray(segmenter.probabilities(prepared.data, batch_size=batch_size),
                       np.float32)
    channels = probs.shape[-1]
    background = np.zeros(channels, np.float32)
    if channels > 1:
        background[0] = 1.0  # outside the head: certainly class 0
    full = preprocessor.inverse(probs, prepared.placement, fill=background)
    classes = probabilities_to_classes(full)
    values = np.asarray(info.class_values, dtype=np.int32)
    labels = values[classes] if channels > 1 else values[1] * classes
    return Segmentation(labels=np.ascontiguousarray(labels.astype(np.int16)),
                        probabilities=full, classes=np.ascontiguousarray(classes))
