"""Figures for people: learning curves and input | reference | prediction montages."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from minc_keras.core.atomic import atomic_output

#: Distinct colours for label classes 1, 2, 3, ... (0 is transparent background).
LABEL_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#46f0f0",
                 "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff"]


def _save(fig, path: str | os.PathLike) -> Path:
    with atomic_output(path, clobber=True) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return Path(path)


def _metric_label(name: str, class_names: list[str] | None) -> str:
    """``dice_2`` as ``Dice WM`` when class 2 is named WM.

    >>> _metric_label("dice_2", ["background", "GM", "WM"]), _metric_label("dice_7", None)
    ('Dice WM', 'dice_7')
    """
    if name.startswith("dice_") and name[5:].isdigit() and class_names:
        index = int(name[5:])
        if index < len(class_names):
            return f"Dice {class_names[index]}"
    return name


def plot_history(history: dict[str, list[float]], path: str | os.PathLike,
                 class_names: list[str] | None = None) -> Path:
    """Learning curves: loss, and accuracy and Dice; training solid, validation dashed.

    Parameters
    ----------
    history : dict
        Keras history (``loss``, ``val_loss``, ``categorical_accuracy``, ``dice_1`` ...).
    path : path-like
        PNG to write.
    class_names : list of str, optional
        Names of the classes by index, to label ``dice_<index>`` curves.
    """
    # a Figure of its own, not pyplot: the user's matplotlib backend (a notebook's) is left alone
    fig = Figure(figsize=(10, 3.8))
    loss_ax, metric_ax = fig.subplots(1, 2)
    metrics = [k for k in history if not k.startswith("val_") and k != "loss"]
    for ax, names in ((loss_ax, ["loss"]), (metric_ax, metrics)):
        for colour, name in zip(matplotlib.colormaps["tab10"].colors, names, strict=False):
            if name not in history:
                continue
            epochs = np.arange(1, len(history[name]) + 1)
            label = _metric_label(name, class_names)
            ax.plot(epochs, history[name], "o-", color=colour, label=f"{label} (training)")
            if f"val_{name}" in history:
                ax.plot(epochs, history[f"val_{name}"], "s--", color=colour,
                        label=f"{label} (validation)")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    loss_ax.set_title("loss")
    metric_ax.set_title("accuracy and Dice per class")
    fig.tight_layout()
    return _save(fig, path)


def label_colormap(num_classes: int) -> ListedColormap:
    """Transparent background, then a distinct colour per class."""
    colours = [(0, 0, 0, 0)] + [LABEL_COLOURS[i % len(LABEL_COLOURS)]
                                for i in range(max(num_classes - 1, 1))]
    return ListedColormap(colours)


def save_montage(image: np.ndarray, reference: np.ndarray | None, prediction: np.ndarray,
                 path: str | os.PathLike, *, num_classes: int, class_names: list[str],
                 rows: int = 6, title: str = "") -> Path:
    """PNG of evenly spaced axial slices: input | reference | prediction.

    Parameters
    ----------
    image : ndarray of shape (X, Y, Z)
        Intensities in RAS axis order.
    reference : ndarray of shape (X, Y, Z) or None
        True class indices (omitted column when None).
    prediction : ndarray of shape (X, Y, Z)
        Predicted class indices.
    path : path-like
        PNG to write.
    num_classes : int
    class_names : list of str
        For the legend.
    rows : int
        Number of slices shown.
    """
    occupied = np.flatnonzero((image != 0).any(axis=(0, 1)) | (prediction > 0).any(axis=(0, 1)))
    lo, hi = (occupied[0], occupied[-1]) if occupied.size else (0, image.shape[2] - 1)
    ks = np.linspace(lo, hi, rows + 2).round().astype(int)[1:-1]
    columns = [("input", None), ("reference", reference), ("prediction", prediction)]
    columns = [c for c in columns if c[0] == "input" or c[1] is not None]
    cmap = label_colormap(num_classes)
    vmax = float(np.percentile(image[image != 0], 99.5)) if (image != 0).any() else 1.0
    fig = Figure(figsize=(2.6 * len(columns), 2.6 * len(ks)))
    axes = fig.subplots(len(ks), len(columns), squeeze=False)
    for r, k in enumerate(ks):
        for c, (name, labels) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(image[:, :, k].T, origin="lower", cmap="gray", vmin=0, vmax=vmax)
            if labels is not None:
                ax.imshow(labels[:, :, k].T, origin="lower", cmap=cmap, vmin=-0.5,
                          vmax=num_classes - 0.5, alpha=0.55, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(f"z = {k}")
    handles = [matplotlib.patches.Patch(color=cmap(i), label=class_names[i])
               for i in range(1, num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=max(len(handles), 1), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path)
