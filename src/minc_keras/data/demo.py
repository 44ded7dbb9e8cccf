"""A small demo dataset in the workshop's layout, made from nilearn's MNI template.

Every pseudo-subject is the MNI ICBM152 2009a nonlinear symmetric template (the
copy shipped inside nilearn, so nothing is downloaded) pushed through a random
smooth deformation, a smooth multiplicative bias field, Rician noise and a
global intensity scale. Labels (0 background, 1 GM, 2 WM) are the argmax of the
template's tissue probability maps, warped with the same deformation as the T1.
The volumes are written as MINC2 with the array in MINC's usual (z, y, x) order.

These are *not* real subjects: they are for trying the pipeline, not for
research conclusions.

Example::

    from minc_keras.data.demo import make_demo_dataset
    files = make_demo_dataset("demo/", n_subjects=3)
"""

# Over the ~400-line guide: a quarter is docstrings and the README written beside the data;
# one concept (the demo dataset), its steps private.

from __future__ import annotations

import logging
import math
import operator
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from minc_keras.core.atomic import write_text_atomic
from minc_keras.core.errors import OutputExistsError, TargetError, UsageError
from minc_keras.io import Volume, write_volume

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIX", "LABEL_SUFFIX", "make_demo_dataset"]

#: File-name endings of the demo T1 and label volumes (the workshop's names).
IMAGE_SUFFIX = "_task-01_ses-01_T1w_anat_rsl.mnc"
LABEL_SUFFIX = "_task-01_ses-01_variant-seg_rsl.mnc"

_CONTROL_POINTS = 4  # control grid per axis of the random displacement field
_DISPLACEMENT_MM = 3.0  # standard deviation of the control-point displacements
_BIAS_POINTS = 3  # control grid per axis of the bias field
_INTENSITY_MAX = 1000.0  # template maximum before the random global scale

_README = """\
# minc-keras demo data — NOT real subjects

These {n} pseudo-subjects are **demo data**, made by `minc-keras demo-data` (seed {seed},
{res:g} mm voxels) for trying the minc-keras pipeline. They are **not** scans of real
people and must **not** be used for research conclusions.

## How they were made

Every pseudo-subject comes from **one template**: the MNI ICBM152 2009a nonlinear
symmetric average brain (files `mni_icbm152_*_tal_nlin_sym_09a`, skull-stripped, as
shipped with nilearn). Each pseudo-subject is that template after

1. a random smooth deformation (a {cp}x{cp}x{cp} grid of random displacements of a
   few mm, upsampled smoothly) combined with a small random affine (scaling +-5 %,
   rotation +-5 degrees), the same for the T1 and its labels;
2. a smooth multiplicative bias field (+-10-15 %);
3. Rician noise (2-3 % of the white-matter intensity);
4. a random global intensity scale.

The T1 is stored as int16 (about 0..1000), zero outside the brain. The labels are
stored as uint8: **0 background (including CSF), 1 grey matter, 2 white matter**,
the most probable class of the template's GM and WM probability maps (background
probability = 1 - GM - WM) after the same deformation, inside the brain mask.
Arrays are in MINC's (z, y, x) order; the world geometry is the template's.

## Layout

    sub-NN/sub-NN{image}   T1-weighted image
    sub-NN/sub-NN{label}   tissue labels

## Source, citation and licence

The template is by V. S. Fonov, D. L. Collins et al. (McConnell Brain Imaging
Centre, Montreal Neurological Institute). If you use it, cite:

- V. S. Fonov, A. C. Evans, R. C. McKinstry, C. R. Almli, D. L. Collins. Unbiased
  nonlinear average age-appropriate brain templates from birth to adulthood.
  NeuroImage 47 (Suppl. 1), S102, 2009. doi:10.1016/S1053-8119(09)70884-5
- V. S. Fonov, A. C. Evans, K. Botteron, C. R. Almli, R. C. McKinstry,
  D. L. Collins and BDCG. Unbiased average age-appropriate atlases for pediatric
  studies. NeuroImage 54(1), 313-327, 2011. doi:10.1016/j.neuroimage.2010.07.033

Licence of the template (it must accompany copies of it):

> Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal
> Neurological Institute, McGill University. Permission to use, copy, modify, and
> distribute this software and its documentation for any purpose and without fee
> is hereby granted, provided that the above copyright notice appear in all copies.
> The authors and McGill University make no representations about the suitability
> of this software for any purpose. It is provided "as is" without express or
> implied warranty.
"""


@dataclass(frozen=True)
class _Template:
    """Template arrays in nilearn's (x, y, z) order, cropped to the brain."""

    t1: np.ndarray  # float32 (X, Y, Z), skull-stripped, 0..1
    gm: np.ndarray  # float32 (X, Y, Z) probability
    wm: np.ndarray  # float32 (X, Y, Z) probability
    mask: np.ndarray  # float32 (X, Y, Z), 1 inside the brain
    affine: np.ndarray  # (4, 4) voxel -> world of these arrays


def _load_template() -> tuple[_Template, np.ndarray, tuple[int, int, int]]:
    """Load the 1 mm template from nilearn's package data (no network).

    Returns
    -------
    template : _Template
        T1, GM, WM and brain mask, cropped to the brain plus a margin.
    full_affine : ndarray of shape (4, 4)
        Voxel-to-world affine of the uncropped template grid.
    full_shape : tuple of int
        Shape (X, Y, Z) of the uncropped template grid.
    """
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise UsageError(
            "the demo data are made from nilearn's MNI template, but nilearn is not "
            "installed; run `pip install nilearn` (or `pip install 'minc-keras[demo]'`)"
        ) from exc
    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = np.asarray(t1_img.get_fdata(dtype=np.float32))
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32))
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32))
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0
    mask = ndimage.binary_fill_holes(mask)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    # Crop to the brain (plus a margin for the smoothing below) and strip the skull.
    margin = 4
    lo = np.maximum(np.argwhere(mask).min(axis=0) - margin, 0)
    hi = np.minimum(np.argwhere(mask).max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    inside = mask[box]
    template = _Template(
        t1=np.where(inside, t1[box], 0).astype(np.float32),
        gm=np.where(inside, gm[box], 0).astype(np.float32),
        wm=np.where(inside, wm[box], 0).astype(np.float32),
        mask=inside.astype(np.float32),
        affine=crop_affine,
    )
    return template, affine, tuple(int(n) for n in t1.shape)


def _antialias(template: _Template, resolution_mm: float) -> _Template:
    """Blur the 1 mm template so sampling it at ``resolution_mm`` does not alias."""
    source_mm = float(np.sqrt((template.affine[:3, :3] ** 2).sum(axis=0)).min())
    if resolution_mm <= source_mm:
        return template
    # Gaussian whose FWHM takes the source resolution up to the output resolution.
    sigma = math.sqrt(resolution_mm**2 - source_mm**2) / (2 * math.sqrt(2 * math.log(2)))
    sigma /= source_mm

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="constant", output=np.float32)

    return _Template(
        blur(template.t1),
        blur(template.gm),
        blur(template.wm),
        blur(template.mask),
        template.affine,
    )


def _smooth_field(
    rng: np.random.Generator, points: int, shape: tuple[int, ...], n: int = 1
) -> np.ndarray:
    """``n`` smooth random fields of ``shape``: a normal control grid, cubic upsampled.

    The same as ``scipy.ndimage.zoom(grid, order=3)`` on each 3-D control grid,
    computed as a product of 1-D interpolation matrices (much faster).

    Returns
    -------
    ndarray of shape (n, *shape), float32
    """
    grid = rng.standard_normal((n, points, points, points)).astype(np.float32)
    identity = np.eye(points, dtype=np.float32)
    wx, wy, wz = (ndimage.zoom(identity, (size / points, 1), order=3) for size in shape)
    return np.einsum("nabc,ia,jb,kc->nijk", grid, wx, wy, wz, optimize=True)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix for angles (radians) about x, then y, then z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sample_coordinates(
    rng: np.random.Generator,
    template: _Template,
    out_affine: np.ndarray,
    out_shape: tuple[int, int, int],
    centre: np.ndarray,
) -> np.ndarray:
    """Template voxel coordinates to sample for each output voxel.

    An output voxel at world position ``p`` takes the template's value at
    ``M (p - c) + c + d(p)``: ``M`` a random rotation (+-5 degrees) and scaling
    (+-5 %) about the brain centre ``c``, ``d`` a smooth random displacement in mm.

    Returns
    -------
    ndarray of shape (3, X, Y, Z), float32
    """
    matrix = _rotation(np.deg2rad(rng.uniform(-5, 5, 3))) @ np.diag(rng.uniform(0.95, 1.05, 3))
    displacement = _DISPLACEMENT_MM * _smooth_field(rng, _CONTROL_POINTS, out_shape, n=3)
    to_source = np.linalg.inv(template.affine)
    # Output voxel -> template voxel, linear part; then add the displacement in voxels.
    world = np.eye(4)
    world[:3, :3] = matrix
    world[:3, 3] = centre - matrix @ centre
    linear = to_source @ world @ out_affine
    axes = [np.arange(n, dtype=np.float32) for n in out_shape]
    coords = np.einsum("ij,j...->i...", to_source[:3, :3].astype(np.float32), displacement)
    for row in range(3):
        coords[row] += (
            linear[row, 0] * axes[0][:, None, None]
            + linear[row, 1] * axes[1][None, :, None]
            + linear[row, 2] * axes[2][None, None, :]
            + linear[row, 3]
        )
    return coords


def _make_subject(
    rng: np.random.Generator,
    template: _Template,
    out_affine: np.ndarray,
    out_shape: tuple[int, int, int],
    centre: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One pseudo-subject on the output grid, in (x, y, z) order.

    Returns
    -------
    t1 : ndarray of shape (X, Y, Z), int16
        Skull-stripped T1, zero outside the brain.
    labels : ndarray of shape (X, Y, Z), uint8
        0 background, 1 GM, 2 WM.
    """
    coords = _sample_coordinates(rng, template, out_affine, out_shape, centre)

    def warp(a: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(
            a, coords, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32
        )

    brain = warp(template.mask) >= 0.5
    gm, wm = warp(template.gm), warp(template.wm)
    background = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([background, gm, wm]), axis=0).astype(np.uint8)
    labels[~brain] = 0

    t1 = warp(template.t1)
    bias = _smooth_field(rng, _BIAS_POINTS, out_shape)[0]
    bias *= rng.uniform(0.10, 0.15) / max(float(np.abs(bias).max()), 1e-6)
    t1 *= 1.0 + bias
    wm_mean = float(t1[labels == 2].mean()) if (labels == 2).any() else float(t1.max())
    sigma = rng.uniform(0.02, 0.03) * wm_mean
    noise = rng.standard_normal((2, *out_shape), dtype=np.float32) * np.float32(sigma)
    t1 = np.hypot(t1 + noise[0], noise[1])  # Rician magnitude
    t1 *= rng.uniform(0.7, 0.85) * _INTENSITY_MAX
    t1[~brain] = 0.0
    return np.clip(np.rint(t1), 0, np.iinfo(np.int16).max).astype(np.int16), labels


def _to_minc_order(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transpose (x, y, z) data to MINC's (z, y, x) order, keeping world positions.

    >>> a = np.diag([1.0, 2.0, 3.0, 1.0])
    >>> a[:3, 3] = [10.0, 20.0, 30.0]
    >>> d, b = _to_minc_order(np.zeros((2, 3, 4)), a)
    >>> d.shape
    (4, 3, 2)
    >>> bool(np.allclose(b @ [3, 2, 1, 1], a @ [1, 2, 3, 1]))  # same voxel, same world
    True
    """
    permuted = affine.copy()
    permuted[:, :3] = affine[:, [2, 1, 0]]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), permuted


def _check_dest(dest: Path, clobber: bool) -> None:
    """Refuse a file, or a non-empty folder without ``clobber``, as ``dest``."""
    if dest.exists() and not dest.is_dir():
        raise OutputExistsError(f"{dest} exists and is not a folder; choose another folder")
    if dest.is_dir() and any(dest.iterdir()) and not clobber:
        raise OutputExistsError(
            f"{dest} exists and is not empty; pass `clobber` to write the demo data into it"
        )


def _checked_options(n_subjects, resolution_mm, seed) -> tuple[int, float, int]:
    """``(n_subjects, resolution_mm, seed)`` as numbers, once checked to be in range."""
    try:
        count, res, seed = operator.index(n_subjects), float(resolution_mm), operator.index(seed)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"n_subjects and seed must be whole numbers and resolution_mm a number "
            f"of mm, got {n_subjects!r}, {seed!r} and {resolution_mm!r}"
        ) from exc
    if count < 1 or seed < 0:
        raise UsageError(
            f"n_subjects must be at least 1 and seed at least 0, got {count} and {seed}"
        )
    if not 1.0 <= res <= 8.0:
        raise UsageError(f"resolution_mm must be between 1 and 8 mm, got {resolution_mm!r}")
    return count, res, seed


def _output_grid(full_affine: np.ndarray, full_shape: tuple[int, ...], res: float
                 ) -> tuple[np.ndarray, tuple[int, ...]]:
    """The template's field of view and origin at ``res`` mm: its affine and shape."""
    source_mm = np.sqrt((full_affine[:3, :3] ** 2).sum(axis=0))
    out_shape = tuple(
        math.floor((n - 1) * s / res + 1e-6) + 1 for n, s in zip(full_shape, source_mm, strict=True)
    )
    out_affine = full_affine.copy()
    out_affine[:3, :3] = full_affine[:3, :3] / source_mm * res
    return out_affine, out_shape


def make_demo_dataset(
    dest: str | os.PathLike,
    *,
    n_subjects: int = 8,
    resolution_mm: float = 2.0,
    seed: int = 0,
    clobber: bool = False,
) -> list[Path]:
    """Write a demo dataset of pseudo-subjects made from nilearn's MNI template.

    For each pseudo-subject ``sub-NN`` (``sub-01`` .. ``sub-{n_subjects}``) this
    writes ``dest/sub-NN/sub-NN_task-01_ses-01_T1w_anat_rsl.mnc`` (int16 T1,
    skull-stripped, about 0..1000) and
    ``dest/sub-NN/sub-NN_task-01_ses-01_variant-seg_rsl.mnc`` (uint8 labels:
    0 background, 1 GM, 2 WM), both MINC2 on the same grid: the template's
    field of view at ``resolution_mm``, arrays in (z, y, x) order. A
    ``dest/README.md`` says what the data are and where they come from.

    Parameters
    ----------
    dest : path-like
        Output folder; created if missing.
    n_subjects : int
        Number of pseudo-subjects, at least 1.
    resolution_mm : float
        Isotropic voxel size in mm, from 1 (the template's) to 8.
    seed : int
        Random seed. The same seed gives the same voxel values; subject ``k``
        does not depend on ``n_subjects``.
    clobber : bool
        Write into a non-empty ``dest``, replacing the demo files there.

    Returns
    -------
    list of Path
        The volumes written, T1 then labels for each subject in order.

    Raises
    ------
    OutputExistsError
        If ``dest`` is not empty and ``clobber`` is false.
    UsageError
        If nilearn is not installed or an option is not a number in range.
    TargetError
        If ``dest`` cannot be written.
    """
    count, res, seed = _checked_options(n_subjects, resolution_mm, seed)
    dest = Path(dest)
    _check_dest(dest, clobber)

    start = time.perf_counter()
    template, full_affine, full_shape = _load_template()
    template = _antialias(template, res)
    out_affine, out_shape = _output_grid(full_affine, full_shape, res)
    weights = template.mask > 0.5
    centre = (template.affine @ np.append(np.argwhere(weights).mean(axis=0), 1.0))[:3]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(
            f"cannot create folder {dest} ({exc.strerror or exc}); choose a folder you can write to"
        ) from exc
    logger.info(
        "loaded the MNI template in %.1f s; grid %s at %g mm",
        time.perf_counter() - start,
        out_shape,
        res,
    )
    # The README first, so that even an interrupted run says what the files are.
    readme = _README.format(
        n=count, seed=seed, res=res, cp=_CONTROL_POINTS, image=IMAGE_SUFFIX, label=LABEL_SUFFIX
    )
    write_text_atomic(dest / "README.md", readme, clobber=True)

    width = max(2, len(str(count)))
    written: list[Path] = []
    for index in range(1, count + 1):
        tic = time.perf_counter()
        rng = np.random.default_rng([seed, index])
        t1, labels = _make_subject(rng, template, out_affine, out_shape, centre)
        t1, minc_affine = _to_minc_order(t1, out_affine)
        labels, _ = _to_minc_order(labels, out_affine)
        subject = f"sub-{index:0{width}d}"
        history = (
            f"minc-keras demo-data: pseudo-subject {subject} (seed {seed}) from the "
            "MNI ICBM152 2009a template shipped with nilearn; not a real subject"
        )
        for data, suffix, dtype in ((t1, IMAGE_SUFFIX, np.int16), (labels, LABEL_SUFFIX, np.uint8)):
            path = dest / subject / f"{subject}{suffix}"
            written.append(
                write_volume(
                    Volume(data, minc_affine), path, clobber=clobber, dtype=dtype, history=history
                )
            )
        logger.info("wrote %s in %.2f s", subject, time.perf_counter() - tic)

    logger.info("wrote %d demo subjects to %s in %.1f s", count, dest, time.perf_counter() - start)
    return written
