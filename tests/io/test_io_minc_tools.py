"""Our MINC2 files as the MNI minc-tools (libminc) see them.

Geometry from ``mincinfo`` and ``voxeltoworld``, voxel values from ``minctoraw``
and statistics from ``mincstats`` must agree with what we wrote, for float and
label volumes, with negative steps, permuted axes and oblique direction cosines.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from synthetic import rotation

from minc_keras.io import Volume, write_volume

pytestmark = pytest.mark.skipif(
    shutil.which("mincinfo") is None, reason="minc-tools (mincinfo) are not installed"
)


def _affine(columns, translation) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = translation
    return affine


# name -> (affine, MINC dimension name of each array axis)
CASES = {
    "diag": (_affine(np.diag([1.0, 2.0, 3.0]), [-5.0, 7.5, 12.0]), ["xspace", "yspace", "zspace"]),
    "zyx-negative": (
        _affine([[0, 0, -1.0], [0, 2.0, 0], [3.0, 0, 0]], [90.0, -126.0, -72.0]),
        ["zspace", "yspace", "xspace"],
    ),
    "yxz": (
        _affine([[0, 1.5, 0], [2.0, 0, 0], [0, 0, 3.0]], [-10.0, 20.0, 30.0]),
        ["yspace", "xspace", "zspace"],
    ),
    "oblique": (
        _affine(rotation(0, 10) @ rotation(1, -12) @ np.diag([1.0, -2.0, 3.0]), [5.0, -6.0, 7.0]),
        ["xspace", "yspace", "zspace"],
    ),
}
DATA = {
    "label": np.arange(480, dtype=np.int16).reshape(8, 6, 10) % 7,
    "float": np.arange(480, dtype=np.float32).reshape(8, 6, 10) * np.float32(0.37)
    - np.float32(20.0),
    "uint8": (np.arange(480).reshape(8, 6, 10) % 4).astype(np.uint8),
}
VARTYPE = {"label": "short", "float": "float", "uint8": "byte"}


def _tool(*args: str | Path) -> str:
    result = subprocess.run([str(a) for a in args], check=True, capture_output=True)
    return result.stdout.decode()


@pytest.fixture(params=[(d, c) for d in DATA for c in CASES], ids=lambda p: f"{p[0]}-{p[1]}")
def written(request, tmp_path):
    data_name, case = request.param
    affine, names = CASES[case]
    path = write_volume(
        Volume(DATA[data_name], affine), tmp_path / f"{data_name}.mnc", history="test_io_minc_tools"
    )
    return path, DATA[data_name], affine, names, data_name


def test_mincinfo_geometry(written):
    path, data, affine, names, _ = written
    assert _tool("mincinfo", "-vardims", "image", path).split() == names
    queries = []
    for name in names:
        queries += ["-dimlength", name]
        queries += [f"-attvalue {name}:{att}" for att in ("direction_cosines", "step", "start")]
    lines = _tool("mincinfo", *" ".join(queries).split(), path).splitlines()
    assert len(lines) == 12
    columns, origin = np.zeros((3, 3)), np.zeros(3)
    for axis, name in enumerate(names):
        length, cosines, step, start = (
            np.array(line.split(), dtype=np.float64) for line in lines[4 * axis : 4 * axis + 4]
        )
        assert length[0] == data.shape[axis]
        world_axis = ["xspace", "yspace", "zspace"].index(name)
        assert cosines[world_axis] > 0
        np.testing.assert_allclose(np.linalg.norm(cosines), 1.0, atol=1e-12)
        columns[:, axis] = cosines * step[0]
        origin += start[0] * cosines
    np.testing.assert_allclose(columns, affine[:3, :3], atol=1e-12)
    np.testing.assert_allclose(origin, affine[:3, 3], atol=1e-9)


def test_voxeltoworld_matches_affine(written):
    path, _, affine, _, _ = written
    for index in [(0, 0, 0), (7, 5, 9), (3, 1, 8)]:
        world = np.array(_tool("voxeltoworld", path, *map(str, index)).split(), dtype=float)
        np.testing.assert_allclose(world, (affine @ [*index, 1.0])[:3], atol=1e-6)


@pytest.mark.parametrize("normalize", ["-nonormalize", "-normalize"])
def test_minctoraw_gives_our_values_in_our_order(written, normalize):
    path, data, _, _, _ = written
    raw = subprocess.run(
        ["minctoraw", "-double", normalize, str(path)], check=True, capture_output=True
    ).stdout
    values = np.frombuffer(raw, dtype=np.float64)
    np.testing.assert_array_equal(values, data.reshape(-1).astype(np.float64))


def test_mincstats_and_type(written):
    path, data, _, _, data_name = written
    stats = {
        flag: float(_tool("mincstats", "-quiet", flag, path))
        for flag in ("-min", "-max", "-mean", "-sum")
    }
    expected = data.astype(np.float64)
    # mincstats prints 10 significant digits
    np.testing.assert_allclose(stats["-min"], expected.min(), rtol=1e-9)
    np.testing.assert_allclose(stats["-max"], expected.max(), rtol=1e-9)
    np.testing.assert_allclose(stats["-mean"], expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats["-sum"], expected.sum(), rtol=1e-6)
    assert _tool("mincinfo", "-vartype", "image", path).strip() == VARTYPE[data_name]
    assert "test_io_minc_tools" in _tool("mincinfo", "-attvalue", ":history", path)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_constant_and_gzipped_volumes(tmp_path, dtype):
    data = np.zeros((3, 4, 5), dtype)
    path = write_volume(Volume(data, np.eye(4)), tmp_path / "zeros.mnc.gz")
    assert _tool("mincinfo", "-vardims", "image", path).split() == ["xspace", "yspace", "zspace"]
    assert float(_tool("mincstats", "-quiet", "-max", path)) == 0.0
    raw = subprocess.run(
        ["minctoraw", "-double", "-normalize", str(path)], check=True, capture_output=True
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(raw, np.float64), 0.0)
