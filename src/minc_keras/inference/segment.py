"""Segment one new scan with a trained model, in the scan's own grid.

The scan is brought to what the model expects — RAS axis order, the training voxel
size, normalised intensities, cropped to the head — then the class probabilities are
resampled back onto the scan's grid and turned into labels there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from minc_keras.inference.probabilities import probabilities_to_classes
from minc_keras.inference.segmenter import Segmenter
from minc_keras.io import Volume
from minc_keras.preprocessing.transforms import (
    bounding_box,
    brain_mask,
    from_canonical,
    normalise_intensity,
    to_canonical,
)

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """Result of segmenting one scan (arrays in the scan's own grid)."""

    labels: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray


def _zoom_factors(voxel_sizes: np.ndarray, target: np.ndarray) -> np.ndarray:
    factors = voxel_sizes / target
    # within 2 % the grids are taken as equal: no interpolation, exact voxels
    return np.where(np.abs(factors - 1) < 0.02, 1.0, factors)


def segment_volume(segmenter: Segmenter, volume: Volume, *,
                   batch_size: int = 8) -> Segmentation:
    """Labels, probabilities and class indices of ``volume`` in its own grid.

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
    data, canonical_affine = to_canonical(volume.data.astype(np.float32), volume.affine)
    voxel = np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0))
    factors = _zoom_factors(voxel, np.asarray(info.get("voxel_sizes_mm", voxel), float))
    mask = brain_mask(data)
    box = bounding_box(mask, int(info.get("crop_margin", 4)))
    norm, _ = normalise_intensity(data[box], mask[box])
    resampled = factors != 1.0
    if resampled.any():
        norm = ndimage.zoom(norm, factors, order=1)
    probs = segmenter.probabilities(norm, batch_size=batch_size)
    crop_shape = tuple(s.stop - s.start for s in box)
    if resampled.any():
        probs = np.stack([_resize(probs[..., c], crop_shape) for c in range(probs.shape[-1])],
                         axis=-1)
    channels = probs.shape[-1]
    full = np.zeros((*data.shape, channels), np.float32)
    if channels > 1:
        full[..., 0] = 1.0
    full[box] = probs
    classes = probabilities_to_classes(full)
    values = np.asarray(info["class_values"], dtype=np.int32)
    labels = values[classes] if channels > 1 else values[1] * classes
    return Segmentation(
        labels=np.ascontiguousarray(from_canonical(labels.astype(np.int16), volume.affine)),
        probabilities=np.ascontiguousarray(from_canonical(full, volume.affine)),
        classes=np.ascontiguousarray(from_canonical(classes, volume.affine)),
    )


def _resize(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of ``array`` onto ``shape`` (same field of view, voxel centres)."""
    factors = [n / m for n, m in zip(shape, array.shape, strict=True)]
    out = ndimage.zoom(array, factors, order=1, grid_mode=False)
    if out.shape != shape:  # zoom may be off by one; pad or crop to the exact grid
        out = out[tuple(slice(0, n) for n in shape)]
        out = np.pad(out, [(0, n - m) for n, m in zip(shape, out.shape, strict=True)], mode="edge")
    return out
