"""Per-volume preprocessing steps: world orientation, intensity normalisation, brain crop.

Pure functions on arrays; :class:`~minc_keras.preprocessing.preprocessor.Preprocessor`
chains them, so the cache and prediction see a scan the same way.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

#: The three slicing views and the canonical (RAS) array axis each one slices along.
VIEW_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}

#: The "view" of a network of whole volumes (``--model-type unet3d``): no slicing.
VOLUME_VIEW = "volume"

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def canonical_orientation(affine: np.ndarray) -> np.ndarray:
    """Return the nibabel orientation that brings an array to RAS axis order.

    Parameters
    ----------
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine of the array.

    Returns
    -------
    ndarray of shape (3, 2)
        For each array axis, the RAS axis it becomes and whether it is flipped.
        Oblique grids take the closest RAS axes; no resampling is done.
    """
    return io_orientation(affine)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transpose and flip ``data`` so array axes run along world x, y, z (RAS).

    Parameters
    ----------
    data : ndarray of shape (I, J, K) or (I, J, K, C)
        Volume (extra trailing axes are carried along).
    affine : ndarray of shape (4, 4)
        Its voxel-to-world affine.

    Returns
    -------
    data : ndarray
        A view or copy in RAS axis order: axis 0 left->right, 1 posterior->anterior,
        2 inferior->superior. Axial slices are ``data[:, :, k]`` whatever the file order.
    affine : ndarray of shape (4, 4)
        The affine of the reoriented array (same world positions for every voxel).

    Examples
    --------
    >>> a = np.arange(24).reshape(2, 3, 4)
    >>> flipped_zyx = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1.]])
    >>> out, aff = to_canonical(a, flipped_zyx)
    >>> out.shape
    (4, 3, 2)
    """
    ornt = canonical_orientation(affine)
    out = apply_orientation(data, ornt)
    return out, affine @ inv_ornt_aff(ornt, data.shape[:3])


def from_canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Undo :func:`to_canonical`: bring a RAS-ordered array back to the grid of ``affine``.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z) or (X, Y, Z, C)
        Array in RAS axis order, e.g. a prediction.
    affine : ndarray of shape (4, 4)
        The affine of the ORIGINAL grid (the one given to :func:`to_canonical`).

    Returns
    -------
    ndarray
        ``data`` with the original grid's axis order and directions.
    """
    back = ornt_transform(_RAS, canonical_orientation(affine))
    return apply_orientation(data, back)


def brain_mask(data: np.ndarray) -> np.ndarray:
    """Voxels that belong to the head: nonzero and finite.

    Skull-stripped scans have an exact zero background; for a scan with no zero
    background every voxel counts.
    """
    mask = np.isfinite(data) & (data != 0)
    if mask.mean() > 0.98:
        mask[...] = True
    return mask


def normalise_intensity(data: np.ndarray, mask: np.ndarray, *, low: float = 0.5,
                        high: float = 99.5, clip: float = 1.5
                        ) -> tuple[np.ndarray, tuple[float, float]]:
    """Scale intensities robustly to about [0, 1] inside ``mask``; zero outside.

    The ``low`` and ``high`` percentiles of the voxels in ``mask`` map to 0 and 1;
    values are clipped to [0, ``clip``] so that a few hot voxels do not dominate.

    Parameters
    ----------
    data : ndarray of shape (I, J, K)
        Raw intensities.
    mask : ndarray of bool, same shape
        Where the brain (or head) is.
    low, high : float
        Percentiles mapped to 0 and 1.
    clip : float
        Upper bound of the scaled values.

    Returns
    -------
    normalised : ndarray of float32, same shape
    params : (float, float)
        The intensities that mapped to 0 and 1, saved for provenance.

    Examples
    --------
    >>> x = np.array([0.0, 10, 20, 30, 40])
    >>> y, (lo, hi) = normalise_intensity(x, x > 0, low=0, high=100)
    >>> [round(float(v), 3) for v in y], lo, hi
    ([0.0, 0.0, 0.333, 0.667, 1.0], 10.0, 40.0)
    """
    values = data[mask]
    if values.size == 0:
        return np.zeros(data.shape, np.float32), (0.0, 1.0)
    lo, hi = np.percentile(values, [low, high])
    scale = hi - lo if hi > lo else 1.0
    out = np.zeros(data.shape, np.float32)
    out[mask] = np.clip((values - lo) / scale, 0.0, clip)
    return out, (float(lo), float(hi))


def bounding_box(mask: np.ndarray, margin: int = 4) -> tuple[slice, ...]:
    """Smallest box holding every True voxel of ``mask``, grown by ``margin`` voxels.

    Returns the whole array when ``mask`` is empty.

    Examples
    --------
    >>> m = np.zeros((10, 8, 6), bool); m[3:5, 2, 1:4] = True
    >>> bounding_box(m, margin=1)
    (slice(2, 6, None), slice(1, 4, None), slice(0, 5, None))
    """
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(int(hits[0]) - margin, 0),
                         min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``.

    >>> round_up(181, 16), round_up(16, 16)
    (192, 16)
    """
    return -(-n // multiple) * multiple


def pad_slices(slices: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad a stack of 2-D slices, centred, to in-plane ``size``.

    Parameters
    ----------
    slices : ndarray of shape (N, H, W, ...)
    size : (int, int)
        Target (H', W') with H' >= H and W' >= W.

    Returns
    -------
    padded : ndarray of shape (N, H', W', ...)
    offset : (int, int)
        Where the original slice starts inside the padded one.
    """
    h, w = slices.shape[1:3]
    if h > size[0] or w > size[1]:
        raise ValueError(f"slices of size {(h, w)} do not fit into {size}")
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    pad = [(0, 0), (top, size[0] - h - top), (left, size[1] - w - left)]
    pad += [(0, 0)] * (slices.ndim - 3)
    return np.pad(slices, pad), (top, left)
