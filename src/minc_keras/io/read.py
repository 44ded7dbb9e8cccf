"""Read MINC1, MINC2 and NIfTI volumes (plain or gzipped) into a :class:`Volume`.

Everything goes through nibabel (``nib.load`` and ``np.asanyarray(img.dataobj)``),
which gives MINC and NIfTI the same voxel-to-world convention (RAS+ millimetres).
A gzipped MINC file is decompressed to a temporary file first, since nibabel
cannot read a gzipped MINC2 (HDF5) file directly. Every way a file can fail to
load is reported as one :class:`~minc_keras.core.errors.VolumeFormatError` sentence.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.minc1 import MincError
from nibabel.spatialimages import HeaderDataError

from minc_keras.core.errors import VolumeFormatError
from minc_keras.io.volume import Volume

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "LABEL_TOLERANCE", "read_raw", "read_volume", "volume_format"]

IMAGE_SUFFIXES: tuple[str, ...] = (".mnc", ".mnc.gz", ".nii", ".nii.gz")
"""File name endings of the volumes this package reads and writes."""

LABEL_TOLERANCE = 1e-3
"""Largest distance from a whole number a label value may have (MINC rescaling noise)."""

_LABEL_DTYPES = (np.uint8, np.int16, np.int32)
_LOAD_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    IndexError,
    TypeError,
    OverflowError,  # a damaged header giving absurd sizes or offsets
    MemoryError,  # ... or sizes too large to hold
    AttributeError,
    RuntimeError,
    struct.error,
    zlib.error,
    ImageFileError,
    MincError,
    HeaderDataError,
)
_FIX = "check that it is a complete MINC or NIfTI volume, or export it again"


def volume_format(path: str | os.PathLike) -> str:
    """Return ``"minc"`` or ``"nifti"`` for a volume file, judged by its suffix.

    Parameters
    ----------
    path : path-like
        A file name ending in one of :data:`IMAGE_SUFFIXES` (any letter case).

    Returns
    -------
    str
        ``"minc"`` for ``.mnc`` / ``.mnc.gz``, ``"nifti"`` for ``.nii`` / ``.nii.gz``.

    Raises
    ------
    VolumeFormatError
        For any other suffix.

    Examples
    --------
    >>> volume_format("sub-01_T1w.nii.gz"), volume_format("brain.mnc")
    ('nifti', 'minc')
    """
    name = Path(path).name.lower()
    if name.endswith((".mnc", ".mnc.gz")):
        return "minc"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    raise VolumeFormatError(
        f"{path} has an unknown suffix; expected one of {', '.join(IMAGE_SUFFIXES)}"
    )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VolumeFormatError(f"{path} does not exist; check the path and the file name")
    if path.is_dir():
        raise VolumeFormatError(
            f"{path} is a folder, not an image file; give a "
            f"{' / '.join(IMAGE_SUFFIXES)} file inside it"
        )
    volume_format(path)
    if path.stat().st_size == 0:
        raise VolumeFormatError(f"{path} is empty (0 bytes); copy or export it again")


def _gunzip(path: Path, folder: str) -> Path:
    """Decompress ``path`` (``*.mnc.gz``) into ``folder``; return the ``.mnc`` copy."""
    out = Path(folder) / "volume.mnc"
    try:
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeFormatError(
            f"{path} is not a valid gzip file or is truncated ({exc}); "
            "download or compress it again"
        ) from exc
    return out


def _minc_kind(path: Path, shown: Path) -> str:
    """Return ``"minc1"`` or ``"minc2"`` from the file's signature."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:3] == b"CDF" and head[3:4] in (b"\x01", b"\x02"):
        return "minc1"
    if h5py.is_hdf5(path):
        return "minc2"
    raise VolumeFormatError(
        f"{shown} is neither MINC1 (netCDF) nor MINC2 (HDF5): it starts with bytes "
        f"{head[:4]!r}; {_FIX}"
    )


def _minc_dims(path: Path, kind: str, shown: Path) -> list[str]:
    """Names of the image dimensions of a MINC file, slowest first."""
    if kind == "minc2":
        with h5py.File(path, "r") as handle:
            image = handle.get("minc-2.0/image/0/image")
            if not isinstance(image, h5py.Dataset):
                raise VolumeFormatError(
                    f"{shown} is an HDF5 file but not MINC2 (no minc-2.0/image/0/image "
                    f"dataset); give a MINC2 file or convert it with mincconvert -2"
                )
            order = image.attrs.get("dimorder", b"")
            order = order.decode("ascii") if isinstance(order, bytes) else str(order)
            return order.split(",")[: image.ndim]
    from nibabel.externals.netcdf import netcdf_file

    with netcdf_file(str(path), "r", mmap=False) as handle:
        return list(handle.variables["image"].dimensions)


def _to_3d(arr: np.ndarray, dims: list[str] | None, shown: Path, *, allow_time: bool) -> np.ndarray:
    """Sum a 4-D (dynamic) volume over its time axis; refuse other shapes."""
    while arr.ndim > 4 and dims is None and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        return arr
    if arr.ndim != 4:
        raise VolumeFormatError(
            f"{shown} is a {arr.ndim}-D image of shape {arr.shape}; expected a 3-D volume "
            "(or 4-D, summed over time)"
        )
    if dims is None:
        axis = 3
    elif "time" in dims:
        axis = dims.index("time")
    else:
        raise VolumeFormatError(
            f"{shown} has dimensions {dims}; expected xspace, yspace, zspace and at most "
            "a time dimension, so split it into 3-D volumes first"
        )
    if arr.shape[axis] > 1 and not allow_time:
        raise VolumeFormatError(
            f"label {shown} has {arr.shape[axis]} time frames; a label volume must be a "
            "single 3-D volume, so extract one frame first"
        )
    if arr.shape[axis] > 1:
        logger.info("%s has %d frames; summing them over time", shown, arr.shape[axis])
    return arr.sum(axis=axis, dtype=np.float64)


def read_raw(
    path: str | os.PathLike, *, allow_time: bool = True
) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Load a volume's real values, its affine and its on-disk data type.

    Parameters
    ----------
    path : path-like
        A ``.mnc``, ``.mnc.gz``, ``.nii`` or ``.nii.gz`` file.
    allow_time : bool
        Sum a 4-D volume with several time frames; if false, refuse it.

    Returns
    -------
    data : ndarray of shape (I, J, K)
        Real (scaled) voxel values in native byte order, as nibabel gives them
        (4-D volumes summed over time).
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine (RAS+ mm).
    stored_dtype : numpy.dtype
        The data type of the voxels in the file, before scaling.

    Raises
    ------
    VolumeFormatError
        If the file is missing or cannot be read as a volume.
    """
    path = Path(path)
    _check_file(path)
    fmt = volume_format(path)
    with contextlib.ExitStack() as stack:
        try:
            local = path
            dims = None
            if fmt == "minc":
                if path.name.lower().endswith(".gz"):
                    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="minc-keras-"))
                    local = _gunzip(path, folder)
                kind = _minc_kind(local, path)
                dims = _minc_dims(local, kind, path) if kind == "minc2" else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                img = nib.load(local)
                arr = np.asanyarray(img.dataobj)
            for warning in caught:
                logger.warning("%s: %s", path, warning.message)
            affine = np.array(img.affine, dtype=np.float64)
            if isinstance(img, nib.Nifti1Image) and not (
                img.header["sform_code"] or img.header["qform_code"]
            ):
                logger.warning("%s has no sform or qform; using voxel sizes only", path)
            stored = np.dtype(img.get_data_dtype())
            if fmt == "minc" and dims is None and arr.ndim == 4:
                dims = _minc_dims(local, "minc1", path)
            del img
        except VolumeFormatError:
            raise
        except ImageFileError as exc:
            expected = "MINC1 or MINC2" if fmt == "minc" else "NIfTI-1 or NIfTI-2"
            raise VolumeFormatError(
                f"{path} is not a {expected} file (nibabel cannot recognise its header); {_FIX}"
            ) from exc
        except _LOAD_ERRORS as exc:
            detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
            if isinstance(exc, KeyError):
                detail = f"missing entry {detail}"
            raise VolumeFormatError(f"cannot read {path} ({detail}); {_FIX}") from exc
    arr = _to_3d(arr, dims, path, allow_time=allow_time)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, affine, stored.newbyteorder("=")


def _as_intensities(arr: np.ndarray, path: Path) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        data = np.array(arr, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise VolumeFormatError(
            f"{path} contains NaN or infinite voxels ({bad} of {data.size}); replace them "
            "with a number (e.g. 0) or export the image again"
        )
    return data


def label_dtype(low: float, high: float) -> np.dtype | None:
    """Smallest of uint8, int16, int32 holding ``low..high``, or None.

    Examples
    --------
    >>> label_dtype(0, 3), label_dtype(-1, 3), label_dtype(0, 70000)
    (dtype('uint8'), dtype('int16'), dtype('int32'))
    """
    for dtype in _LABEL_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return None


def whole_numbers(arr: np.ndarray) -> np.ndarray | None:
    """Return ``arr`` rounded to whole numbers, or None if any value is not one.

    Values within :data:`LABEL_TOLERANCE` of a whole number count as whole
    (MINC integer-to-real scaling can leave such noise).
    """
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return arr
    rounded = np.rint(arr)
    with np.errstate(invalid="ignore"):
        ok = np.abs(arr - rounded) <= LABEL_TOLERANCE
    return rounded if ok.all() else None


def _as_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    whole = whole_numbers(arr)
    if whole is None:
        rounded = np.rint(arr)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(arr - rounded) <= LABEL_TOLERANCE)
        example = arr.flat[int(np.flatnonzero(bad)[0])]
        raise VolumeFormatError(
            f"label {path} has value {float(example)!r}, which is not a whole number; labels "
            "must be integer class codes (0, 1, 2, ...), not probabilities or intensities"
        )
    if whole.size == 0:
        return whole.astype(np.uint8)
    dtype = label_dtype(float(whole.min()), float(whole.max()))
    if dtype is None:
        raise VolumeFormatError(
            f"label {path} has values {whole.min()}..{whole.max()}, beyond 32-bit integers; "
            "labels must be integer class codes (0, 1, 2, ...)"
        )
    return whole.astype(dtype)


def read_volume(path: str | os.PathLike, *, label: bool = False) -> Volume:
    """Read a MINC1, MINC2 or NIfTI-1/2 volume, plain or gzipped.

    Parameters
    ----------
    path : path-like
        A ``.mnc``, ``.mnc.gz``, ``.nii`` or ``.nii.gz`` file.
    label : bool
        Read a label (segmentation) volume: values must be whole numbers and are
        returned as the smallest of uint8, int16, int32 that holds them.

    Returns
    -------
    Volume
        ``data`` of shape (I, J, K) in the file's array order, float32 for
        intensities; ``affine`` maps voxel indices to RAS+ world mm. A 4-D
        (dynamic) volume is summed over time.

    Raises
    ------
    VolumeFormatError
        If the file is missing, unreadable, not 3-D/4-D, holds NaN or infinite
        voxels, or (``label=True``) holds values that are not whole numbers.
    """
    path = Path(path)
    arr, affine, _ = read_raw(path, allow_time=not label)
    data = _as_labels(arr, path) if label else _as_intensities(arr, path)
    logger.debug("read %s: shape %s, %s", path, data.shape, data.dtype)
    return Volume(data, affine, path)
