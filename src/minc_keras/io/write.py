"""Write a :class:`Volume` as MINC2 or NIfTI-1 (chosen by suffix), and convert files.

Integer data (labels) keep an integer type in both formats with identity
scaling; float data are stored as float32. Every file is written atomically:
an interrupted run leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike

from minc_keras.core.atomic import atomic_output, check_writable
from minc_keras.core.errors import VolumeFormatError
from minc_keras.io.minc2_write import minc_dimensions, write_minc2
from minc_keras.io.read import label_dtype, read_raw, volume_format, whole_numbers
from minc_keras.io.volume import Volume

logger = logging.getLogger(__name__)

__all__ = ["convert_volume", "write_volume"]

_STORABLE = tuple(
    np.dtype(t)
    for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
)
_XFORM_SCANNER = 1
_GZIP_LEVEL = 4


def _storage_array(data: np.ndarray, dtype: DTypeLike | None, path: Path) -> np.ndarray:
    """Cast ``data`` to the type it is stored as, checking it fits exactly."""
    if dtype is None:
        if data.dtype == np.bool_:
            target = np.dtype(np.uint8)
        elif data.dtype in _STORABLE and data.dtype.kind in "iu":
            target = data.dtype
        elif data.dtype.kind in "iu":
            target = (
                label_dtype(float(data.min()), float(data.max()))
                if data.size
                else np.dtype(np.uint8)
            )
            if target is None:
                raise VolumeFormatError(
                    f"cannot write {path}: integer values {data.min()}..{data.max()} do not fit "
                    "in 32 bits; rescale the data or pass a float dtype"
                )
        else:
            target = np.dtype(np.float32)
    else:
        try:
            target = np.dtype(dtype)
        except TypeError as exc:
            raise VolumeFormatError(
                f"cannot write {path}: {dtype!r} is not a data type; choose one of "
                f"{', '.join(str(t) for t in _STORABLE)}"
            ) from exc
        if target not in _STORABLE:
            raise VolumeFormatError(
                f"cannot write {path} as {target}; choose one of "
                f"{', '.join(str(t) for t in _STORABLE)}"
            )
    if target.kind in "iu" and data.dtype.kind not in "iub":
        whole = whole_numbers(data)
        if whole is None:
            raise VolumeFormatError(
                f"cannot write {path} as {target}: the data are not all whole numbers; "
                "round them first or write a float type"
            )
        data = whole
    if target.kind in "iu" and data.size:
        info = np.iinfo(target)
        low, high = data.min(), data.max()
        if low < info.min or high > info.max:
            raise VolumeFormatError(
                f"cannot write {path} as {target}: values {low}..{high} do not fit in "
                f"{info.min}..{info.max}; choose a wider integer type"
            )
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(data, dtype=target)
    if target.kind == "f" and not np.isfinite(out).all():
        raise VolumeFormatError(
            f"cannot write {path}: the volume contains NaN or infinite voxels (or values too "
            f"large for {target}); replace them with numbers first"
        )
    return out


@contextlib.contextmanager
def _gzip_file(path: Path) -> Iterator[gzip.GzipFile]:
    """Gzip stream without the temporary file's name or a time stamp in its header."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
        ) as packed,
    ):
        yield packed


def _write_nifti(
    data: np.ndarray, affine: np.ndarray, path: Path, history: str | None, *, compress: bool
) -> None:
    """NIfTI-1 with qform and sform both set to ``affine`` (code 1, scanner)."""
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    img.set_qform(affine, code=_XFORM_SCANNER)
    img.set_sform(affine, code=_XFORM_SCANNER)
    header = img.header
    header.set_xyzt_units("mm", "sec")
    header.set_slope_inter(1.0, 0.0)
    if history:
        header["descrip"] = history.encode("ascii", "replace")[:79]
    # serialise in memory: nibabel would judge the format by the temporary file's name
    payload = img.to_bytes()
    with _gzip_file(path) if compress else open(path, "wb") as handle:
        handle.write(payload)


def _write_minc(
    data: np.ndarray, affine: np.ndarray, path: Path, history: str | None, *, compress: bool
) -> None:
    """MINC2; gzipped as a whole for ``.mnc.gz`` (minc-tools decompress it on the fly)."""
    if not compress:
        write_minc2(data, affine, path, history=history)
        return
    plain = path.with_name(path.name + ".hdf5")
    try:
        write_minc2(data, affine, plain, history=history)
        with open(plain, "rb") as src, _gzip_file(path) as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    finally:
        plain.unlink(missing_ok=True)


def write_volume(
    volume: Volume,
    path: str | os.PathLike,
    *,
    clobber: bool = False,
    dtype: DTypeLike | None = None,
    history: str | None = None,
) -> Path:
    """Write a 3-D volume as MINC2 (``.mnc``, ``.mnc.gz``) or NIfTI-1 (``.nii``, ``.nii.gz``).

    Parameters
    ----------
    volume : Volume
        ``data`` of shape (I, J, K) and its voxel-to-world ``affine``; the array
        is written in its own axis order with the same geometry.
    path : path-like
        Output file; its suffix picks the format.
    clobber : bool
        Replace an existing file.
    dtype : dtype-like, optional
        Stored data type (uint8, int8, uint16, int16, uint32, int32, float32 or
        float64). By default integer data keep an integer type (booleans become
        uint8, 64-bit integers the smallest of uint8/int16/int32 that fits) and
        float data are stored as float32.
    history : str, optional
        Provenance line: MINC ``history`` attribute, NIfTI ``descrip`` field.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    VolumeFormatError
        For an unknown suffix, data that is not 3-D, not finite, or does not fit
        ``dtype``, or a singular affine.
    OutputExistsError
        If ``path`` exists and ``clobber`` is false.
    TargetError
        If the folder cannot be written.
    """
    path = Path(path)
    fmt = volume_format(path)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise VolumeFormatError(
            f"cannot write {path}: data has shape {data.shape}; expected a 3-D array (I, J, K)"
        )
    affine = np.asarray(volume.affine, dtype=np.float64)
    try:
        minc_dimensions(affine, data.shape)
    except ValueError as exc:
        raise VolumeFormatError(
            f"cannot write {path}: the affine is not finite or is singular ({exc}); "
            "give the volume a valid voxel-to-world affine"
        ) from exc
    stored = _storage_array(data, dtype, path)
    writer = _write_minc if fmt == "minc" else _write_nifti
    compress = path.name.lower().endswith(".gz")
    with atomic_output(path, clobber=clobber) as tmp:
        writer(stored, affine, tmp, history, compress=compress)
    logger.debug("wrote %s: shape %s, %s", path, stored.shape, stored.dtype)
    return path


def convert_volume(
    src: str | os.PathLike, dst: str | os.PathLike, *, clobber: bool = False
) -> Path:
    """Convert a MINC1/MINC2/NIfTI volume to MINC2 or NIfTI-1 on the same grid.

    Voxel values, array order and world geometry are kept. A source stored as
    integers whose real values are whole numbers (labels, unscaled scans) is
    written as integers (the source type if the values fit it); anything else
    as float32.

    Parameters
    ----------
    src : path-like
        Input volume (``.mnc``, ``.mnc.gz``, ``.nii``, ``.nii.gz``).
    dst : path-like
        Output volume; its suffix picks the format.
    clobber : bool
        Replace an existing ``dst``.

    Returns
    -------
    Path
        ``dst``.

    Raises
    ------
    VolumeFormatError
        If ``src`` cannot be read or ``dst`` has an unknown suffix.
    OutputExistsError
        If ``dst`` exists and ``clobber`` is false.
    """
    src, dst = Path(src), Path(dst)
    volume_format(dst)
    check_writable(dst, clobber=clobber)
    arr, affine, stored = read_raw(src)
    whole = whole_numbers(arr) if stored.kind in "iub" else None
    if whole is not None and whole.size:
        low, high = float(whole.min()), float(whole.max())
        fits = stored in _STORABLE and np.iinfo(stored).min <= low and high <= np.iinfo(stored).max
        target = stored if fits else label_dtype(low, high)
        data = whole.astype(target) if target is not None else arr
    else:
        data = arr
    if data.dtype.kind == "f":
        data = np.asarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise VolumeFormatError(
                f"{src} contains NaN or infinite voxels; replace them with a number "
                "(e.g. 0) before converting"
            )
    logger.info("converting %s -> %s (%s)", src, dst, data.dtype)
    return write_volume(
        Volume(data, affine, src), dst, clobber=clobber, history=f"minc-keras convert {src} {dst}"
    )


def output_suffix(path: str | Path) -> str:
    """Suffix for a volume written in the same format as ``path`` (MINC2 for any MINC).

    >>> output_suffix("a/sub-1_T1w.nii.gz"), output_suffix("b.mnc.gz"), output_suffix("c.nii")
    ('.nii.gz', '.mnc', '.nii')
    """
    name = str(path).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return ".nii" if name.endswith(".nii") else ".mnc"
