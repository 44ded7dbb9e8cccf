"""Round trips through every readable format into every writable one.

Tiny asymmetric arrays and affines (negative steps, permuted and oblique axes)
so that an axis mix-up, a flipped step or a lost translation fails a test.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import rotation

from minc_keras.io import (
    IMAGE_SUFFIXES,
    Volume,
    convert_volume,
    read_volume,
    volume_format,
    write_volume,
)
from minc_keras.io.minc2_write import minc_dimensions

MINC_TOOLS = shutil.which("mincconvert") is not None
NIBABEL_MINC = sorted((Path(nib.__file__).parent / "tests" / "data").glob("*.mnc"))


def _affine(columns: np.ndarray, translation: list[float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = translation
    return affine


AFFINES = {
    # array axes (x, y, z), steps 1, 2, 3
    "diag": _affine(np.diag([1.0, 2.0, 3.0]), [-5.0, 7.5, 12.0]),
    # array axes (z, y, x) with x step -1, like the MNI pipeline's files
    "zyx-negative": _affine(
        np.array([[0, 0, -1.0], [0, 2.0, 0], [3.0, 0, 0]]), [90.0, -126.0, -72.0]
    ),
    # array axes (y, x, z)
    "yxz": _affine(np.array([[0, 1.5, 0], [2.0, 0, 0], [0, 0, 3.0]]), [-10.0, 20.0, 30.0]),
    # rotated ~10 degrees about x and ~-12 degrees about y, negative y step
    "oblique": _affine(
        rotation(0, 10) @ rotation(1, -12) @ np.diag([1.0, -2.0, 3.0]), [5.0, -6.0, 7.0]
    ),
}
INTS = np.arange(480, dtype=np.int16).reshape(8, 6, 10)
FLOATS = np.arange(480, dtype=np.float32).reshape(8, 6, 10) * np.float32(0.37) - np.float32(20.0)
SOURCES = [
    "minc2",
    "minc2.gz",
    "minc2-libminc",
    "minc1",
    "minc1.gz",
    "nifti1",
    "nifti2",
    "nifti1.gz",
]
DESTINATIONS = [".mnc", ".nii.gz", ".nii", ".mnc.gz"]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _gzip(src: Path, dst: Path) -> Path:
    with open(src, "rb") as plain, gzip.open(dst, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    return dst


def make_source(kind: str, data: np.ndarray, affine: np.ndarray, folder: Path) -> Path:
    """Write ``data`` in format ``kind`` (MINC1 via the MNI tools, NIfTI via nibabel)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind.startswith("nifti"):
        klass = nib.Nifti2Image if kind == "nifti2" else nib.Nifti1Image
        img = klass(data, affine, dtype=data.dtype)
        img.set_sform(affine, code=1)
        path = folder / ("src.nii.gz" if kind.endswith(".gz") else "src.nii")
        img.to_filename(path)
        return path
    ours = write_volume(Volume(data, affine), folder / "ours.mnc")
    if kind == "minc2":
        return ours
    if kind == "minc2.gz":
        return _gzip(ours, folder / "src.mnc.gz")
    if not MINC_TOOLS:
        pytest.skip("minc-tools (mincconvert) are not installed")
    minc1 = folder / "minc1.mnc"
    _run("mincconvert", "-clobber", str(ours), str(minc1))
    assert minc1.read_bytes()[:3] == b"CDF"
    if kind == "minc1":
        return minc1
    if kind == "minc1.gz":
        return _gzip(minc1, folder / "src.mnc.gz")
    libminc2 = folder / "libminc2.mnc"
    _run("mincconvert", "-2", "-clobber", str(minc1), str(libminc2))
    return libminc2


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Make each source file once for all destinations: ``sources(kind, affine, label)``."""
    made: dict[tuple[str, str, bool], Path] = {}

    def get(kind: str, affine_name: str, label: bool) -> Path:
        key = (kind, affine_name, label)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{kind}-{affine_name}-{label}")
            data = INTS if label else FLOATS
            made[key] = make_source(kind, data, AFFINES[affine_name], folder)
        return made[key]

    return get


@pytest.mark.parametrize("dst_suffix", DESTINATIONS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("affine_name", list(AFFINES))
@pytest.mark.parametrize("label", [False, True], ids=["float", "label"])
def test_convert_keeps_values_and_geometry(
    tmp_path, sources, source, affine_name, dst_suffix, label
):
    affine = AFFINES[affine_name]
    data = INTS if label else FLOATS
    src = sources(source, affine_name, label)
    dst = convert_volume(src, tmp_path / f"out{dst_suffix}")

    back = read_volume(dst, label=label)
    np.testing.assert_array_equal(back.data, data)
    # NIfTI keeps the affine in float32: about 1e-7 relative
    tolerance = 1e-5 if "nifti" in source or "nii" in dst_suffix else 1e-6
    np.testing.assert_allclose(back.affine, affine, atol=tolerance)
    if label:
        assert back.data.dtype == np.int16
    if dst_suffix != ".mnc.gz":  # nibabel reads gzipped MINC1 only
        img = nib.load(dst)
        assert img.get_data_dtype() == (np.int16 if label else np.float32)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
        np.testing.assert_allclose(img.affine, affine, atol=tolerance)


@pytest.mark.parametrize("dst_suffix", [".mnc", ".nii.gz"])
@pytest.mark.parametrize("affine_name", list(AFFINES))
def test_write_read_keeps_every_voxel_world_position(tmp_path, affine_name, dst_suffix):
    affine = AFFINES[affine_name]
    path = write_volume(Volume(FLOATS, affine), tmp_path / f"v{dst_suffix}")
    back = read_volume(path)
    assert back.data.dtype == np.float32
    assert back.source == path
    index = np.indices(FLOATS.shape).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:]
    world_back = back.affine[:3, :3] @ index + back.affine[:3, 3:]
    np.testing.assert_allclose(world_back, world, atol=1e-4)
    np.testing.assert_array_equal(back.data.reshape(-1), FLOATS.reshape(-1))


@pytest.mark.parametrize(
    ("values", "expected"),
    [((0, 3), np.uint8), ((-1, 3), np.int16), ((0, 300), np.int16), ((0, 40000), np.int32)],
)
@pytest.mark.parametrize("suffix", [".mnc", ".nii"])
def test_labels_read_as_smallest_integer_type(tmp_path, values, expected, suffix):
    data = np.full((3, 4, 5), values[0], dtype=np.int32)
    data[1, 2, 3] = values[1]
    path = write_volume(Volume(data, AFFINES["diag"]), tmp_path / f"lab{suffix}")
    back = read_volume(path, label=True)
    assert back.data.dtype == expected
    np.testing.assert_array_equal(back.data, data)


@pytest.mark.parametrize("suffix", [".mnc", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_write_dtype_is_stored(tmp_path, suffix, dtype):
    data = INTS % 200
    path = write_volume(Volume(data, AFFINES["oblique"]), tmp_path / f"v{suffix}", dtype=dtype)
    assert nib.load(path).get_data_dtype() == dtype
    np.testing.assert_array_equal(read_volume(path).data, data)


def test_write_defaults_for_bool_int64_and_float64(tmp_path):
    mask = INTS > 200
    assert (
        nib.load(write_volume(Volume(mask, np.eye(4)), tmp_path / "m.mnc")).get_data_dtype()
        == np.uint8
    )
    big = INTS.astype(np.int64)
    assert (
        nib.load(write_volume(Volume(big, np.eye(4)), tmp_path / "b.nii")).get_data_dtype()
        == np.int16
    )
    doubles = FLOATS.astype(np.float64)
    path = write_volume(Volume(doubles, np.eye(4)), tmp_path / "d.mnc")
    assert nib.load(path).get_data_dtype() == np.float32


@pytest.mark.parametrize("suffix", [".mnc", ".nii.gz", ".mnc.gz"])
@pytest.mark.parametrize("value", [0, 7])
def test_constant_volume_round_trips(tmp_path, suffix, value):
    for data in (np.full((3, 4, 5), value, np.int16), np.full((3, 4, 5), value, np.float32)):
        path = write_volume(Volume(data, np.eye(4)), tmp_path / f"c{suffix}", clobber=True)
        np.testing.assert_array_equal(read_volume(path).data, data)


def test_write_history_and_clobber(tmp_path):
    path = write_volume(Volume(INTS, np.eye(4)), tmp_path / "h.mnc", history="unit test")
    with h5py.File(path, "r") as handle:
        assert b"unit test" in handle["minc-2.0"].attrs["history"]
    write_volume(Volume(INTS + 1, np.eye(4)), path, clobber=True)
    np.testing.assert_array_equal(read_volume(path).data, INTS + 1)
    assert [p.name for p in tmp_path.iterdir()] == ["h.mnc"]


def test_4d_nifti_is_summed_over_time(tmp_path, caplog):
    frames = np.stack([FLOATS, 2 * FLOATS, np.ones_like(FLOATS)], axis=-1)
    path = tmp_path / "pet.nii.gz"
    nib.Nifti1Image(frames, AFFINES["yxz"]).to_filename(path)
    with caplog.at_level(logging.INFO, logger="minc_keras.io"):
        volume = read_volume(path)
    np.testing.assert_allclose(volume.data, 3 * FLOATS + 1, rtol=1e-6)
    np.testing.assert_allclose(volume.affine, AFFINES["yxz"], atol=1e-5)
    assert "summing" in caplog.text


def test_trailing_singleton_nifti_axes_are_dropped(tmp_path):
    path = tmp_path / "one.nii"
    nib.Nifti1Image(FLOATS[..., None, None], np.eye(4)).to_filename(path)
    np.testing.assert_array_equal(read_volume(path).data, FLOATS)


@pytest.mark.filterwarnings("ignore:Invalid spacing declaration")
@pytest.mark.parametrize("path", NIBABEL_MINC, ids=[p.name for p in NIBABEL_MINC])
def test_nibabel_minc_test_files(tmp_path, path):
    img = nib.load(path)
    expected = np.asanyarray(img.dataobj)
    if expected.ndim == 4:  # these files store time as the slowest axis
        expected = expected.sum(axis=0)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, expected.astype(np.float32))
    np.testing.assert_array_equal(volume.affine, img.affine)
    for suffix in (".mnc", ".nii.gz"):
        back = read_volume(write_volume(volume, tmp_path / f"copy{suffix}"))
        np.testing.assert_array_equal(back.data, volume.data)
        np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)


def test_convert_keeps_integer_type_of_unscaled_minc(tmp_path):
    src = write_volume(Volume(INTS, AFFINES["zyx-negative"]), tmp_path / "lab.mnc")
    dst = convert_volume(src, tmp_path / "lab.nii.gz")
    assert nib.load(dst).get_data_dtype() == np.int16
    scaled = Path(nib.__file__).parent / "tests" / "data" / "minc1_1_scale.mnc"
    dst = convert_volume(scaled, tmp_path / "scaled.nii")
    assert nib.load(dst).get_data_dtype() == np.float32


def test_volume_format_and_suffixes():
    assert IMAGE_SUFFIXES == (".mnc", ".mnc.gz", ".nii", ".nii.gz")
    assert [volume_format(f"a{s}") for s in IMAGE_SUFFIXES] == ["minc", "minc", "nifti", "nifti"]
    assert volume_format("A.NII.GZ") == "nifti"


@pytest.mark.parametrize("time_axis", [0, 1, 3])
def test_minc_time_axis_is_found_by_name(tmp_path, time_axis):
    path = write_volume(Volume(FLOATS, AFFINES["oblique"]), tmp_path / "pet.mnc")
    frames = np.stack([FLOATS, 2 * FLOATS], axis=time_axis)
    names = ["xspace", "yspace", "zspace"]
    names.insert(time_axis, "time")
    with h5py.File(path, "r+") as handle:
        group = handle["minc-2.0/image/0"]
        attrs = dict(group["image"].attrs)
        del group["image"]
        image = group.create_dataset("image", data=frames)
        for key, value in attrs.items():
            image.attrs[key] = value
        image.attrs["dimorder"] = np.bytes_(",".join(names).encode())
        image.attrs["valid_range"] = np.array([frames.min(), frames.max()], dtype=np.float64)
        handle["minc-2.0/dimensions"].create_dataset("time", data=0)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.data, 3 * FLOATS, rtol=1e-6)
    np.testing.assert_allclose(volume.affine, AFFINES["oblique"], atol=1e-6)


def test_nifti_without_orientation_is_read_with_a_warning(tmp_path, caplog):
    img = nib.Nifti1Image(FLOATS, None)
    img.header.set_zooms((1.0, 2.0, 3.0))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    path = tmp_path / "bare.nii"
    img.to_filename(path)
    with caplog.at_level(logging.WARNING, logger="minc_keras.io"):
        volume = read_volume(path)
    np.testing.assert_array_equal(volume.voxel_sizes, [1.0, 2.0, 3.0])
    assert "no sform or qform" in caplog.text


def test_upper_case_suffixes(tmp_path):
    for name in ("A.MNC", "B.NII.GZ"):
        path = write_volume(Volume(INTS, AFFINES["yxz"]), tmp_path / name)
        np.testing.assert_array_equal(read_volume(path, label=True).data, INTS)


@settings(max_examples=200, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-44.0, 44.0)] * 3),
    steps=st.tuples(*[st.floats(0.2, 5.0) | st.floats(-5.0, -0.2)] * 3),
    order=st.permutations([0, 1, 2]),
    shift=st.tuples(*[st.floats(-300.0, 300.0)] * 3),
)
def test_minc_dimensions_rebuild_any_affine(angles, steps, order, shift):
    rot = rotation(0, angles[0]) @ rotation(1, angles[1]) @ rotation(2, angles[2])
    affine = _affine((rot @ np.diag(steps))[:, order], list(shift))
    dims = minc_dimensions(affine, (4, 5, 6))
    assert sorted(d.name for d in dims) == ["xspace", "yspace", "zspace"]
    columns = np.column_stack([np.array(d.cosines) * d.step for d in dims])
    origin = sum(d.start * np.array(d.cosines) for d in dims)
    np.testing.assert_allclose(columns, affine[:3, :3], atol=1e-9)
    np.testing.assert_allclose(origin, affine[:3, 3], atol=1e-7)
    for d in dims:
        assert d.cosines["xyz".index(d.name[0])] > 0
