"""QC pictures: three orthogonal planes of a scan with its predicted label contours over it.

``predict --qc`` draws one PNG per scan (:func:`draw_qc_picture`) beside its labels, named
after them (:func:`qc_picture_path`), for the run's ``qc.html``
(:mod:`minc_keras.predict.qc_page`). Drawn on a :class:`matplotlib.figure.Figure` of its
own: the user's matplotlib backend is left alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from minc_keras.core.atomic import atomic_output
from minc_keras.io import IMAGE_SUFFIXES, read_volume
from minc_keras.preprocessing.transforms import to_canonical

#: Colours of label classes 1, 2, 3, ... (the reports' palette).
CONTOUR_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#46f0f0",
                   "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff"]

#: How a QC picture's name ends.
QC_PICTURE_SUFFIX = "_desc-qc.png"


def qc_picture_path(label_path: str | os.PathLike) -> Path:
    """Where the QC picture of the labels at ``label_path`` goes.

    Beside flat labels, ``<name>_dseg.<ext>`` -> ``<name>_desc-qc.png``; for BIDS
    derivatives (labels in ``sub-X/[ses-Y/]anat/``), in the subject's ``figures/`` folder
    as fMRIPrep does, the labels' entities but ``desc`` kept:
    ``sub-X/figures/sub-X[_ses-Y]_desc-qc.png``.

    >>> qc_picture_path("out/a_s1_dseg.nii.gz").as_posix()
    'out/a_s1_desc-qc.png'
    >>> qc_picture_path("o/sub-1/ses-2/anat/sub-1_ses-2_desc-unet_dseg.mnc").as_posix()
    'o/sub-1/figures/sub-1_ses-2_desc-qc.png'
    """
    path = Path(label_path)
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = name.removesuffix("_dseg")
    folder = path.parent
    subject = next((p for p in (folder.parent, folder.parent.parent)
                    if p.name.startswith("sub-")), None)
    if folder.name == "anat" and subject is not None and name.startswith("sub-"):
        name = re.sub(r"_desc-[0-9A-Za-z]+", "", name)
        folder = subject / "figures"
    return folder / f"{name}{QC_PICTURE_SUFFIX}"


def _planes(data: np.ndarray, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sagittal, coronal and axial planes (scan, labels) through the labels' centre."""
    where = np.argwhere(labels > 0)
    centre = (where.mean(axis=0) if len(where) else np.array(data.shape) / 2).astype(int)
    centre = np.clip(centre, 0, np.array(data.shape) - 1)
    i, j, k = centre
    # RAS arrays: rows of each picture run superior (or anterior) to the top
    return [(data[i].T, labels[i].T), (data[:, j].T, labels[:, j].T),
            (data[:, :, k].T, labels[:, :, k].T)]


def draw_qc_picture(scan_path: str | os.PathLike, label_path: str | os.PathLike,
                    png_path: str | os.PathLike | None = None, *,
                    class_names: list[str] | None = None) -> Path:
    """Draw the scan's three orthogonal planes with the label contours; return the PNG.

    Parameters
    ----------
    scan_path, label_path : path-like
        The scan and its predicted labels (the same grid, as ``predict`` writes them).
    png_path : path-like, optional
        The PNG to write (default :func:`qc_picture_path`); replaced if it exists.
    class_names : list of str, optional
        Names of the classes by index, for the legend.
    """
    png_path = Path(png_path) if png_path is not None else qc_picture_path(label_path)
    scan, labels = read_volume(scan_path), read_volume(label_path, label=True)
    data, affine = to_canonical(np.asarray(scan.data, dtype=np.float32), scan.affine)
    classes = to_canonical(np.asarray(labels.data), labels.affine)[0]
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    low, high = np.percentile(data, [1, 99]) if data.size else (0.0, 1.0)
    fig = Figure(figsize=(9, 3.4), facecolor="black")
    axes = fig.subplots(1, 3)
    aspects = [spacing[2] / spacing[1], spacing[2] / spacing[0], spacing[1] / spacing[0]]
    present = [int(v) for v in np.unique(classes) if v > 0]
    for ax, (image, label), aspect in zip(axes, _planes(data, classes), aspects, strict=True):
        ax.imshow(image, cmap="gray", origin="lower", vmin=low, vmax=high or 1.0,
                  aspect=aspect, interpolation="nearest")
        for value in present:
            mask = (label == value).astype(np.float32)
            if 0 < mask.sum() < mask.size:
                ax.contour(mask, levels=[0.5], linewidths=0.8,
                           colors=[CONTOUR_COLOURS[(value - 1) % len(CONTOUR_COLOURS)]])
        ax.set_axis_off()
    names = class_names or []
    handles = [(CONTOUR_COLOURS[(v - 1) % len(CONTOUR_COLOURS)],
                names[v] if v < len(names) else f"class {v}") for v in present]
    for n, (colour, name) in enumerate(handles):
        fig.text(0.01 + 0.12 * n, 0.02, name, color=colour, fontsize=9)
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0.08, wspace=0.02)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(png_path, clobber=True) as tmp:
        fig.savefig(tmp, dpi=80, format="png", facecolor="black")
    return png_path
