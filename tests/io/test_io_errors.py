"""Every way reading or writing a volume can fail gives one actionable sentence.

Each failure raises a :class:`MincKerasError` subclass naming the file, and
leaves no partial or temporary file behind.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from minc_keras.core.errors import (
    MincKerasError,
    OutputExistsError,
    TargetError,
    VolumeFormatError,
)
from minc_keras.io import Volume, convert_volume, read_volume, volume_format, write_volume

RNG_SEED = 20240607
SHAPE = (8, 6, 10)
AFFINE = np.diag([1.0, 2.0, 3.0, 1.0])


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder for inputs plus a private system temp folder, both checked for leftovers."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    folder = tmp_path / "data"
    folder.mkdir()
    yield folder
    assert list(system_tmp.iterdir()) == [], "temporary files left behind"


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _check_read_fails(path: Path, *, label: bool = False, match: str | None = None) -> str:
    before = _listing(path.parent)
    with pytest.raises(VolumeFormatError, match=match) as info:
        read_volume(path, label=label)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message
    assert "; " in message, "message should say what to do"
    assert _listing(path.parent) == before
    return message


def _random(shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).random(shape, dtype=np.float32)


def _truncate(path: Path) -> Path:
    raw = path.read_bytes()
    out = path.with_name("cut-" + path.name)
    out.write_bytes(raw[: len(raw) // 2])
    return out


def test_missing_file(scratch):
    _check_read_fails(scratch / "missing.mnc", match="does not exist")


def test_folder_instead_of_file(scratch):
    (scratch / "scan.nii.gz").mkdir()
    _check_read_fails(scratch / "scan.nii.gz", match="is a folder")


def test_unknown_suffix(scratch):
    path = scratch / "scan.img"
    path.write_bytes(b"\0" * 400)
    _check_read_fails(path, match="unknown suffix")
    with pytest.raises(VolumeFormatError, match=r"scan\.hdr"):
        volume_format("scan.hdr")


@pytest.mark.parametrize("name", ["empty.mnc", "empty.nii.gz", "empty.nii", "empty.mnc.gz"])
def test_zero_bytes(scratch, name):
    (scratch / name).touch()
    _check_read_fails(scratch / name, match="empty")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mnc", ".mnc.gz"])
def test_truncated(scratch, suffix):
    volume = Volume(_random((20, 20, 20)), AFFINE)
    path = scratch / f"whole{suffix}"
    if suffix.startswith(".nii"):
        nib.Nifti1Image(volume.data, AFFINE).to_filename(path)
    else:
        write_volume(volume, path)
    _check_read_fails(_truncate(path))


@pytest.mark.parametrize("name", ["noise.mnc", "noise.nii.gz", "noise.nii", "noise.mnc.gz"])
def test_random_bytes(scratch, name):
    path = scratch / name
    path.write_bytes(np.random.default_rng(RNG_SEED).bytes(3000))
    _check_read_fails(path)


def test_gzipped_random_bytes(scratch):
    path = scratch / "noise.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(RNG_SEED).bytes(3000)))
    _check_read_fails(path, match="not a NIfTI")


def test_hdf5_that_is_not_minc(scratch):
    path = scratch / "table.mnc"
    with h5py.File(path, "w") as handle:
        handle["values"] = np.arange(5)
    _check_read_fails(path, match="not MINC2")


def test_minc2_missing_dimensions(scratch):
    path = scratch / "broken.mnc"
    with h5py.File(path, "w") as handle:
        handle.create_group("minc-2.0/image/0").create_dataset("image", data=np.zeros(SHAPE))
    _check_read_fails(path)


def test_minc_with_vector_dimension(scratch):
    path = write_volume(Volume(np.zeros(SHAPE, np.int16), AFFINE), scratch / "rgb.mnc")
    with h5py.File(path, "r+") as handle:
        group = handle["minc-2.0/image/0"]
        del group["image"]
        image = group.create_dataset("image", data=np.zeros((*SHAPE, 3), np.int16))
        image.attrs["dimorder"] = np.bytes_(b"xspace,yspace,zspace,vector_dimension")
        image.attrs["valid_range"] = np.array([0.0, 1.0])
        handle["minc-2.0/dimensions"].create_dataset("vector_dimension", data=0)
    _check_read_fails(path, match="vector_dimension")


@pytest.mark.parametrize("shape", [(8, 6), (8,), (4, 5, 6, 2, 3)])
def test_wrong_number_of_dimensions(scratch, shape):
    path = scratch / f"{len(shape)}d.nii"
    nib.Nifti1Image(np.zeros(shape, np.float32), AFFINE).to_filename(path)
    _check_read_fails(path, match=f"{len(shape)}-D image")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_intensities(scratch, bad):
    data = _random()
    data[3, 2, 1] = bad
    path = scratch / "nan.nii.gz"
    nib.Nifti1Image(data, AFFINE).to_filename(path)
    _check_read_fails(path, match="contains NaN or infinite voxels")


@pytest.mark.parametrize(("bad", "shown"), [(1.5, "1.5"), (0.25, "0.25"), (np.nan, "nan")])
def test_non_integer_labels(scratch, bad, shown):
    data = np.zeros(SHAPE, np.float32)
    data[3, 2, 1] = bad
    path = scratch / "seg.nii"
    nib.Nifti1Image(data, AFFINE).to_filename(path)
    message = _check_read_fails(path, label=True, match="integer class codes")
    assert shown in message
    if np.isfinite(bad):  # fine as an intensity image
        assert read_volume(path).data.shape == SHAPE


def test_label_with_time_frames(scratch):
    path = scratch / "seg4d.nii"
    nib.Nifti1Image(np.zeros((*SHAPE, 3), np.int16), AFFINE).to_filename(path)
    _check_read_fails(path, label=True, match="time frames")


@pytest.mark.parametrize("suffix", [".mnc", ".nii.gz"])
def test_write_without_clobber_keeps_original(scratch, suffix):
    path = write_volume(Volume(_random(), AFFINE), scratch / f"out{suffix}")
    original = path.read_bytes()
    with pytest.raises(OutputExistsError, match=re.escape(path.name)):
        write_volume(Volume(np.zeros(SHAPE, np.float32), AFFINE), path)
    with pytest.raises(OutputExistsError, match=re.escape(path.name)):
        convert_volume(path, path)
    assert path.read_bytes() == original
    assert _listing(scratch) == [path.name]


@pytest.mark.parametrize("suffix", [".mnc", ".nii"])
def test_write_where_parent_is_a_file(scratch, suffix):
    blocker = scratch / "not-a-folder"
    blocker.write_text("x")
    target = blocker / f"out{suffix}"
    with pytest.raises(TargetError, match="not-a-folder"):
        write_volume(Volume(_random(), AFFINE), target)
    assert _listing(scratch) == ["not-a-folder"]


@pytest.mark.parametrize(
    ("data", "affine", "kwargs", "match"),
    [
        (np.zeros((8, 6)), AFFINE, {}, "3-D"),
        (np.zeros(SHAPE), np.diag([1.0, 0.0, 3.0, 1.0]), {}, "singular"),
        (np.full(SHAPE, np.nan), AFFINE, {}, "NaN"),
        (np.full(SHAPE, 1e39), AFFINE, {}, "NaN or infinite"),
        (np.arange(480).reshape(SHAPE), AFFINE, {"dtype": np.uint8}, "do not fit"),
        (np.full(SHAPE, 0.5), AFFINE, {"dtype": np.int16}, "whole numbers"),
        (np.zeros(SHAPE), AFFINE, {"dtype": np.complex64}, "complex64"),
        (np.zeros(SHAPE), AFFINE, {"dtype": "no-such-type"}, "not a data type"),
        (np.full(SHAPE, 2**40), AFFINE, {}, "32 bits"),
    ],
    ids=[
        "2d",
        "singular",
        "nan",
        "overflow",
        "uint8-range",
        "not-whole",
        "complex",
        "bad-dtype",
        "int64",
    ],
)
@pytest.mark.parametrize("suffix", [".mnc", ".nii.gz"])
def test_write_rejects_bad_volumes(scratch, data, affine, kwargs, match, suffix):
    path = scratch / f"bad{suffix}"
    with pytest.raises(VolumeFormatError, match=match) as info:
        write_volume(Volume(data, affine), path, **kwargs)
    assert path.name in str(info.value)
    assert _listing(scratch) == []


def test_write_unknown_suffix(scratch):
    with pytest.raises(VolumeFormatError, match="unknown suffix"):
        write_volume(Volume(_random(), AFFINE), scratch / "out.img")
    with pytest.raises(VolumeFormatError, match=r"out\.hdr"):
        convert_volume(scratch / "missing.mnc", scratch / "out.hdr")
    assert _listing(scratch) == []


def test_all_errors_share_the_base_class():
    for error in (VolumeFormatError, OutputExistsError, TargetError):
        assert issubclass(error, MincKerasError)
