"""Tiny synthetic head-like volumes for fast tests (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minc_keras.io import Volume, write_volume

#: MINC's usual (z, y, x) array order with a negative x step, like the OASIS files.
ZYX_AFFINE = np.array([[0.0, 0.0, -1.0, 40.0],
                       [0.0, 1.2, 0.0, -30.0],
                       [1.5, 0.0, 0.0, -20.0],
                       [0.0, 0.0, 0.0, 1.0]])
#: NIfTI's usual (x, y, z) order, anisotropic.
XYZ_AFFINE = np.array([[-1.0, 0.0, 0.0, 40.0],
                       [0.0, 1.2, 0.0, -30.0],
                       [0.0, 0.0, 1.5, -20.0],
                       [0.0, 0.0, 0.0, 1.0]])


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about world ``axis`` (for oblique test affines)."""
    theta = np.deg2rad(degrees)
    c, s = np.cos(theta), np.sin(theta)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(3)
    rot[i, i] = rot[j, j] = c
    rot[i, j], rot[j, i] = -s, s
    return rot


def make_subject(seed: int, shape_xyz=(22, 26, 18)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid 'brain' in (x, y, z) order: label 2 core (bright), 1 shell, 0 outside.

    Returns
    -------
    image : ndarray of float32 of shape ``shape_xyz``
    labels : ndarray of int16, same shape
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_xyz], indexing="ij"))
    radii = 0.75 + 0.08 * rng.standard_normal(3)
    centre = 0.05 * rng.standard_normal(3)
    r = np.sqrt((((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2)
                .sum(0))
    labels = np.zeros(shape_xyz, np.int16)
    labels[r < 1.0] = 1
    labels[r < 0.6] = 2
    image = np.choose(labels, [0.0, 60.0, 100.0]).astype(np.float32)
    image += (labels > 0) * rng.normal(0, 4, shape_xyz).astype(np.float32)
    return image, labels


def write_dataset(root: Path, *, n_subjects: int = 6, fmt: str = "mnc") -> Path:
    """Write a dataset in the workshop's layout; MINC in (z, y, x) order, NIfTI in (x, y, z)."""
    for s in range(1, n_subjects + 1):
        image, labels = make_subject(s)
        if fmt == "mnc":
            image, labels, affine = image.transpose(2, 1, 0), labels.transpose(2, 1, 0), ZYX_AFFINE
            suffix = ".mnc"
        else:
            affine, suffix = XYZ_AFFINE, ".nii.gz"
        folder = root / f"sub-{s:02d}"
        name = f"sub-{s:02d}_task-01_ses-01"
        write_volume(Volume(np.ascontiguousarray(image), affine),
                     folder / f"{name}_T1w_anat_rsl{suffix}")
        write_volume(Volume(np.ascontiguousarray(labels), affine),
                     folder / f"{name}_variant-seg_rsl{suffix}")
    return root


def train_tiny_model(root: Path, *, epochs: int, extra: tuple[str, ...] = ()) -> Path:
    """Train the workshop model briefly on 6 synthetic subjects; return the saved model."""
    from minc_keras.cli.main import main

    source = write_dataset(root / "source", n_subjects=6, fmt="nii")
    target = root / "run"
    code = main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.7", "0.15", "--epochs", str(epochs),
                 "--batch-size", "8", "--lr", "5e-3", "--quiet", *extra])
    if code != 0:
        raise RuntimeError(f"training the test model failed with exit status {code}")
    return target / "model" / "model.keras"


def write_scan_folder(folder: Path, seeds: range, bad_name: str) -> Path:
    """NIfTI scans of the subjects ``seeds`` and one file ``bad_name`` that is not a scan."""
    for seed in seeds:
        write_volume(Volume(make_subject(seed)[0], XYZ_AFFINE.copy()),
                     folder / f"sub-{seed}_T1w.nii.gz")
    (folder / bad_name).write_bytes(b"not a scan")
    return folder


def sparse_codes(n_structures: int) -> list[int]:
    """``n_structures`` label codes that are not contiguous (4, 7, 10, ...), left/right paired."""
    return [4 + 3 * k for k in range(n_structures)]


def relabel_sparse(labels: np.ndarray, codes: list[int]) -> np.ndarray:
    """Split the foreground of an (x, y, z) label array into ``len(codes)`` structures.

    Bands of the foreground's (y, z) columns, each cut into a left (x below the middle)
    and a right half: structure ``2 * band`` is the left one, ``2 * band + 1`` the right.
    """
    bands = len(codes) // 2
    columns = (labels > 0).any(axis=0)  # (y, z): columns holding foreground
    rank = np.cumsum(columns.ravel()).reshape(columns.shape) - 1
    band = np.minimum(rank * bands // max(int(columns.sum()), 1), bands - 1)[None]
    x = np.arange(labels.shape[0])[:, None, None]
    index = np.broadcast_to(2 * band + (x >= labels.shape[0] // 2), labels.shape)
    out = np.where(labels > 0, np.asarray(codes)[index], 0)
    return out.astype(np.int16)


def write_structure_table(path: Path, codes: list[int]) -> Path:
    """A label table naming ``codes`` ``Left S<k>`` / ``Right S<k>`` as :func:`relabel_sparse`."""
    lines = ["index\tname\ttissue"]
    for k, code in enumerate(codes):
        side = "Left" if k % 2 == 0 else "Right"
        lines.append(f"{code}\t{side} S{k // 2}\tGM")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sparse_dataset(root: Path, codes: list[int], *, n_subjects: int = 6) -> Path:
    """Like :func:`write_dataset` (NIfTI) with the labels split into sparse-coded structures."""
    for s in range(1, n_subjects + 1):
        image, labels = make_subject(s)
        labels = relabel_sparse(labels, codes)
        folder = root / f"sub-{s:02d}"
        name = f"sub-{s:02d}_task-01_ses-01"
        write_volume(Volume(image, XYZ_AFFINE.copy()), folder / f"{name}_T1w_anat_rsl.nii.gz")
        write_volume(Volume(labels, XYZ_AFFINE.copy()), folder / f"{name}_variant-seg_rsl.nii.gz")
    return root
