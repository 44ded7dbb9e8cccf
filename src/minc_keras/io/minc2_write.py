"""Write a 3-D volume as a MINC2 (HDF5) file with h5py.

nibabel reads MINC but cannot write it, so this module lays out the HDF5 groups,
datasets and attributes the way libminc 2.4 (``mincconvert -2``, ``rawtominc -2``)
does, which both nibabel and the MNI minc-tools read:

``/minc-2.0``
    attributes ``ident``, ``minc_version``, ``history``.
``/minc-2.0/dimensions/{x,y,z}space``
    scalar int32 datasets whose attributes hold the geometry: ``start``, ``step``,
    ``direction_cosines``, ``length``, ``spacing``, ``alignment``, ``units``.
``/minc-2.0/image/0/image``
    the voxels (gzip-compressed, chunked by slabs of whole slices) with ``dimorder``
    naming the dimension of each array axis, and ``valid_range``.
``/minc-2.0/image/0/image-min``, ``image-max``
    scalar real range. They are set equal to ``valid_range`` so that every reader
    maps a stored value to the same real value (identity scaling).
``/minc-2.0/info``
    empty group for acquisition metadata.

String attributes are fixed-length, NUL-terminated ASCII, as libminc writes them.
"""

from __future__ import annotations

import getpass
import itertools
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MincDimension", "minc_dimensions", "write_minc2"]

_SPACE_NAMES = ("xspace", "yspace", "zspace")
_COMMENTS = {
    "xspace": "X increases from patient left to right",
    "yspace": "Y increases from patient posterior to anterior",
    "zspace": "Z increases from patient inferior to superior",
}
_VERSION = "MINC Version    1.0"
_VARID = "MINC standard variable"
_MINC_VERSION = "2.0"
_CHUNK_BYTES = 1 << 20
_COMPRESSION_LEVEL = 4


@dataclass(frozen=True)
class MincDimension:
    """Geometry of one array axis as MINC stores it.

    Parameters
    ----------
    name : str
        ``"xspace"``, ``"yspace"`` or ``"zspace"``.
    length : int
        Number of voxels along the axis.
    start : float
        Coordinate of the first voxel centre along the axis, in mm.
    step : float
        Signed distance between voxel centres, in mm.
    cosines : tuple of float
        Unit direction of the axis in world space (x, y, z); its component
        along the named world axis is positive.
    """

    name: str
    length: int
    start: float
    step: float
    cosines: tuple[float, float, float]


def minc_dimensions(affine: np.ndarray, shape: tuple[int, ...]) -> list[MincDimension]:
    """Express a voxel-to-world affine as MINC dimensions, one per array axis.

    Each array axis gets the name of the world axis its column is best aligned
    with (the best of the 6 assignments of distinct names); its step takes the
    sign that makes the direction cosine point to the positive side of that
    world axis, and the starts solve ``sum_i start_i * cos_i = affine[:3, 3]``.

    Parameters
    ----------
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine for array axes ``(i, j, k)``.
    shape : tuple of int
        Array shape ``(I, J, K)``.

    Returns
    -------
    list of MincDimension
        In array-axis order.

    Raises
    ------
    ValueError
        If the affine is not finite or its 3x3 part is singular.

    Examples
    --------
    >>> dims = minc_dimensions(np.diag([-1.0, 2.0, 3.0, 1.0]), (4, 5, 6))
    >>> [(d.name, d.step, d.start) for d in dims]
    [('xspace', -1.0, 0.0), ('yspace', 2.0, 0.0), ('zspace', 3.0, 0.0)]
    """
    affine = np.asarray(affine, dtype=np.float64)
    columns = affine[:3, :3]
    norms = np.sqrt((columns**2).sum(axis=0))
    if not np.all(np.isfinite(affine)) or np.any(norms == 0) or abs(np.linalg.det(columns)) < 1e-12:
        raise ValueError(f"affine {affine.tolist()} is not finite or is singular")
    unit = columns / norms
    best = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(abs(unit[perm[i], i]) for i in range(3)),
    )
    steps = np.array([norms[i] * (1.0 if unit[best[i], i] >= 0 else -1.0) for i in range(3)])
    cosines = columns / steps
    starts = np.linalg.solve(cosines, affine[:3, 3])
    return [
        MincDimension(
            name=_SPACE_NAMES[best[i]],
            length=int(shape[i]),
            start=float(starts[i]) + 0.0,
            step=float(steps[i]),
            cosines=tuple(float(c) + 0.0 for c in cosines[:, i]),
        )
        for i in range(3)
    ]


def _set_string(obj: h5py.HLObject, name: str, value: str) -> None:
    """Store ``value`` as a fixed-length NUL-terminated string attribute."""
    raw = value.encode("utf-8") + b"\0"
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(raw))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    attr = h5py.h5a.create(obj.id, name.encode("ascii"), string_type, space)
    attr.write(np.array(raw, dtype=f"S{len(raw)}"), mtype=string_type)


def _standard_attrs(obj: h5py.HLObject, vartype: str) -> None:
    _set_string(obj, "version", _VERSION)
    _set_string(obj, "varid", _VARID)
    _set_string(obj, "vartype", vartype)


def _ident() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    stamp = time.strftime("%Y.%m.%d.%H.%M.%S")
    return f"{user}:{socket.gethostname()}:{stamp}:{os.getpid()}:1"


def _valid_range(data: np.ndarray) -> tuple[float, float]:
    """Return a range ``lo < hi`` that holds every value of ``data``.

    It is stored as ``valid_range`` and as ``image-min``/``image-max`` alike, so
    the voxel-to-real scaling is the identity however a reader applies it.
    """
    if data.size == 0:
        return 0.0, 1.0
    lo, hi = float(data.min()), float(data.max())
    if lo < hi:
        return lo, hi
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return (lo, lo + 1.0) if lo < info.max else (lo - 1.0, lo)
    pad = max(1.0, abs(lo) * 1e-3)
    return lo - pad, hi + pad


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Slabs of whole slices along the first axis, about 1 MiB each."""
    slice_bytes = max(1, int(np.prod(shape[1:])) * itemsize)
    slab = int(min(shape[0], max(1, _CHUNK_BYTES // slice_bytes)))
    return (slab, *(int(n) for n in shape[1:]))


def write_minc2(
    data: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, history: str | None = None
) -> Path:
    """Write ``data`` on the grid ``affine`` to ``path`` as MINC2, as stored.

    Parameters
    ----------
    data : ndarray of shape (I, J, K)
        Voxels in the dtype to store (an integer type or float32/float64); real
        values equal stored values. Must be finite.
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine for the array axes.
    path : path-like
        The file to create (replaced if it exists); the caller makes it atomic.
    history : str, optional
        Line added to the file's ``history`` attribute, e.g. the command that
        produced it.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``data`` is not 3-D or the affine is singular.
    """
    path = Path(path)
    data = np.ascontiguousarray(data)
    if data.ndim != 3:
        raise ValueError(f"MINC2 writer expects a 3-D array, got shape {data.shape}")
    dims = minc_dimensions(affine, data.shape)
    lo, hi = _valid_range(data)
    stamp = time.strftime("%a %b %d %H:%M:%S %Y")
    with h5py.File(path, "w") as handle:
        root = handle.create_group("minc-2.0")
        _set_string(root, "ident", _ident())
        _set_string(root, "minc_version", _MINC_VERSION)
        _set_string(root, "history", f"{stamp}>>> {history or 'minc-keras write_volume'}\n")
        dim_group = root.create_group("dimensions")
        for dim in dims:
            var = dim_group.create_dataset(dim.name, shape=(), dtype=np.int32, data=0)
            _standard_attrs(var, "dimension____")
            var.attrs.create("length", dim.length, dtype=np.uint32)
            var.attrs.create("start", dim.start, dtype=np.float64)
            var.attrs.create("step", dim.step, dtype=np.float64)
            var.attrs.create("direction_cosines", np.array(dim.cosines, dtype=np.float64))
            _set_string(var, "spacing", "regular__")
            _set_string(var, "alignment", "centre")
            _set_string(var, "units", "mm")
            _set_string(var, "comments", _COMMENTS[dim.name])
        image_group = root.create_group("image").create_group("0")
        image = image_group.create_dataset(
            "image",
            data=data,
            chunks=_chunks(data.shape, data.dtype.itemsize),
            compression="gzip",
            compression_opts=_COMPRESSION_LEVEL,
        )
        _standard_attrs(image, "group________")
        _set_string(image, "dimorder", ",".join(dim.name for dim in dims))
        _set_string(image, "complete", "true_")
        image.attrs.create("valid_range", np.array([lo, hi], dtype=np.float64))
        for name, value in (("image-min", lo), ("image-max", hi)):
            var = image_group.create_dataset(name, shape=(), dtype=np.float64, data=value)
            _standard_attrs(var, "var_attribute")
        root.create_group("info")
    logger.debug(
        "wrote MINC2 %s: shape %s, %s, dims %s",
        path,
        data.shape,
        data.dtype,
        [dim.name for dim in dims],
    )
    return path
