"""Real OASIS scans: MINC2 files agree with their NIfTI twins, and survive our writer.

The data are licensed and live outside the repository; these tests skip when
``../shared/data`` is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from minc_keras.io import convert_volume, read_volume, write_volume

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MINC_DIR = DATA / "oasis-dev"
NIFTI_DIR = DATA / "oasis-dev-nifti"
pytestmark = pytest.mark.skipif(
    not (MINC_DIR.exists() and NIFTI_DIR.exists()), reason=f"real data not found under {DATA}"
)

MINC_FILES = sorted(MINC_DIR.glob("*/*.mnc")) if MINC_DIR.exists() else []
FULL_CHECK_SUBJECTS = 3


def _twin(minc: Path) -> Path:
    return NIFTI_DIR / minc.parent.name / minc.name.replace(".mnc", ".nii.gz")


def _index_map(minc_affine: np.ndarray, nifti_affine: np.ndarray, nifti_shape, minc_shape):
    """Axis order, flips and offsets taking NIfTI voxel indices to MINC ones.

    ``inv(A_minc) @ A_nifti`` must be a signed permutation plus a translation.
    """
    mapping = np.linalg.inv(minc_affine) @ nifti_affine
    signed = np.rint(mapping[:3, :3])
    np.testing.assert_allclose(mapping[:3, :3], signed, atol=1e-5)
    assert sorted(np.abs(signed).sum(axis=0)) == [1, 1, 1]
    order = [int(np.flatnonzero(signed[axis])[0]) for axis in range(3)]
    assert sorted(order) == [0, 1, 2]
    flips = [signed[axis, order[axis]] < 0 for axis in range(3)]
    assert [nifti_shape[b] for b in order] == list(minc_shape)
    for axis in range(3):  # a flipped axis starts at the far end
        expected = minc_shape[axis] - 1 if flips[axis] else 0
        np.testing.assert_allclose(mapping[axis, 3], expected, atol=1e-4)
    return order, flips


def _nifti_in_minc_order(nifti_data: np.ndarray, order, flips) -> np.ndarray:
    data = np.transpose(nifti_data, order)
    return np.flip(data, axis=[a for a in range(3) if flips[a]]) if any(flips) else data


def test_all_files_have_twins_with_matching_geometry():
    assert len(MINC_FILES) >= 3
    for minc in MINC_FILES:
        m, n = nib.load(minc), nib.load(_twin(minc))
        _index_map(m.affine, n.affine, n.shape, m.shape)


@pytest.mark.parametrize("subject", range(FULL_CHECK_SUBJECTS))
def test_minc_equals_nifti_voxel_for_voxel(subject):
    subject_dir = sorted(p for p in MINC_DIR.iterdir() if p.is_dir())[subject]
    for minc in sorted(subject_dir.glob("*.mnc")):
        label = "T1w" not in minc.name
        m = read_volume(minc, label=label)
        n = read_volume(_twin(minc), label=label)
        order, flips = _index_map(m.affine, n.affine, n.shape, m.shape)
        np.testing.assert_array_equal(m.data, _nifti_in_minc_order(n.data, order, flips))
        if label:
            assert np.issubdtype(m.data.dtype, np.integer)
            assert set(np.unique(m.data).tolist()) <= {0, 1, 2, 3}
        else:
            assert m.data.dtype == np.float32


@pytest.fixture(scope="module")
def first_seg():
    return next(p for p in MINC_FILES if p.name.endswith("_variant-seg.mnc"))


def test_real_label_written_to_minc2_and_nifti(tmp_path, first_seg):
    original = read_volume(first_seg, label=True)
    assert set(np.unique(original.data).tolist()) == {0, 1, 2, 3}
    path = write_volume(original, tmp_path / "seg.mnc")
    img = nib.load(path)
    assert img.get_data_dtype() == original.data.dtype
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), original.data)
    np.testing.assert_allclose(img.affine, original.affine, atol=1e-9)
    nifti = convert_volume(first_seg, tmp_path / "seg.nii.gz")
    assert nib.load(nifti).get_data_dtype() == np.int16
    np.testing.assert_array_equal(read_volume(nifti, label=True).data, original.data)


def _needs(tool: str) -> None:
    """Skip, saying so, where the minc-tools program ``tool`` is not installed."""
    if shutil.which(tool) is None:
        pytest.skip(f"minc-tools not installed: no {tool} to cross-check our MINC2 file with")


def test_real_label_written_to_minc2_has_the_original_dimensions(tmp_path, first_seg):
    _needs("mincinfo")
    path = write_volume(read_volume(first_seg, label=True), tmp_path / "seg.mnc")
    # same dimension names, lengths, steps and starts as the original file
    assert _mincinfo_table(path) == _mincinfo_table(first_seg)


def _mincinfo_table(path: Path) -> list[tuple[str, int, float, float]]:
    out = subprocess.run(["mincinfo", str(path)], check=True, capture_output=True, text=True).stdout
    rows = [
        row
        for row in map(str.split, out.splitlines())
        if len(row) == 4 and row[0].endswith("space")
    ]
    assert len(rows) == 3
    return [
        (name, int(length), float(step), float(start) + 0.0) for name, length, step, start in rows
    ]


def test_real_scan_written_to_minc2(tmp_path):
    scan = next(p for p in MINC_FILES if "T1w" in p.name)
    original = read_volume(scan)
    path = write_volume(original, tmp_path / "t1.mnc")
    back = read_volume(path)
    np.testing.assert_array_equal(back.data, original.data)
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-9)


def test_real_scan_written_to_minc2_has_the_original_statistics(tmp_path):
    _needs("mincstats")
    scan = next(p for p in MINC_FILES if "T1w" in p.name)
    original = read_volume(scan)
    path = write_volume(original, tmp_path / "t1.mnc")
    for flag, value in (("-max", original.data.max()), ("-mean", original.data.mean())):
        out = subprocess.run(
            ["mincstats", "-quiet", flag, str(path)], check=True, capture_output=True, text=True
        ).stdout
        np.testing.assert_allclose(float(out), value, rtol=1e-6)
