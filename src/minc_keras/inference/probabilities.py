"""Segment a whole volume: batch a slice network's slices and stitch them, or run a
network of volumes over the whole scan."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from minc_keras.preprocessing.transforms import VIEW_AXES, VOLUME_VIEW, round_up


def predict_probabilities(model, volume: np.ndarray, *, view: str = "axial", multiple: int = 1,
                          batch_size: int = 8, occupied: np.ndarray | None = None,
                          shifts: int = 1) -> np.ndarray:
    """Class probabilities of every voxel of a preprocessed volume.

    Parameters
    ----------
    model : keras.Model
        Maps (N, H, W, 1) slices to (N, H, W, C) probabilities.
    volume : ndarray of shape (X, Y, Z)
        Normalised intensities in RAS axis order (as in the cache).
    view : {"axial", "coronal", "sagittal", "volume"}
        The slicing view the model was trained on; ``volume``: a network of whole
        volumes, run once per pass over the whole scan (:func:`volume_probabilities`).
    multiple : int
        In-plane sizes are padded to a multiple of this for the network.
    batch_size : int
        Slices per forward pass.
    occupied : ndarray of bool of shape (X, Y, Z), optional
        Where there is anything to segment; slices with nothing are not run through the
        network and get probability 1 for class 0. Defaults to ``volume != 0``.
    shifts : int
        Passes through the network, averaged; pass ``k`` places the slice ``k`` pixels
        further down and right in the zero-padded input. A network that folds 2x2 pixel
        blocks into channels (``input_stride`` 2) sees other blocks in each pass, so 2
        passes give it every voxel's neighbourhood on both sides of a block edge.

    Returns
    -------
    ndarray of float32 of shape (X, Y, Z, C)
        ``C`` is 1 for a single sigmoid output (foreground probability).
    """
    if view == VOLUME_VIEW:
        return volume_probabilities(model, volume, multiple=multiple, shifts=shifts)
    axis = VIEW_AXES[view]
    plane = [volume.shape[a] for a in range(3) if a != axis]
    channels = int(model.output_shape[-1])
    out = np.zeros((volume.shape[axis], *plane, channels), np.float32)
    if channels > 1:
        out[..., 0] = 1.0
    for ks, probs in slice_batches(model, volume, view=view, multiple=multiple,
                                   batch_size=batch_size, occupied=occupied, shifts=shifts):
        out[ks] = probs
    return np.moveaxis(out, 0, axis)


def slice_batches(model, volume: np.ndarray, *, view: str = "axial", multiple: int = 1,
                  batch_size: int = 8, occupied: np.ndarray | None = None,
                  shifts: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The probabilities of :func:`predict_probabilities` (a slice view), batch by batch.

    Yields ``(ks, probs)``: the indices of the occupied slices along the view's axis and
    their probabilities, of shape ``(len(ks), *plane, C)`` (the slice's two axes in
    order); slices with nothing to segment are left out (class 0).
    """
    axis = VIEW_AXES[view]
    if occupied is None:
        occupied = volume != 0
    plane = [volume.shape[a] for a in range(3) if a != axis]
    room = shifts - 1  # zero rows and columns the shifted passes move into
    size = (round_up(plane[0] + room, multiple), round_up(plane[1] + room, multiple))
    top, left = (size[0] - plane[0] - room) // 2, (size[1] - plane[1] - room) // 2
    keep = np.flatnonzero(occupied.any(axis=tuple(a for a in range(3) if a != axis)))
    slices = np.moveaxis(volume, axis, 0)
    for start in range(0, len(keep), batch_size):
        ks = keep[start:start + batch_size]
        total = 0.0
        for k in range(shifts):
            rows, cols = slice(top + k, top + k + plane[0]), slice(left + k, left + k + plane[1])
            batch = np.zeros((len(ks), *size, 1), np.float32)
            batch[:, rows, cols, 0] = slices[ks]
            total = total + np.asarray(model.predict_on_batch(batch))[:, rows, cols]
        yield ks, total / shifts


def volume_probabilities(model, volume: np.ndarray, *, multiple: int = 1,
                         shifts: int = 1) -> np.ndarray:
    """Class probabilities of every voxel from a network of whole volumes.

    Parameters
    ----------
    model : keras.Model
        Maps (1, X, Y, Z, 1) volumes to (1, X, Y, Z, C) probabilities.
    volume : ndarray of shape (X, Y, Z)
        Normalised intensities in RAS axis order.
    multiple : int
        Each side is zero-padded at its far end to a multiple of this.
    shifts : int
        Passes, averaged; pass ``k`` places the volume ``k`` voxels further along every
        axis in the padded input, so a network that folds 2x2x2 blocks into channels sees
        every voxel's neighbourhood on both sides of a block edge.

    Returns
    -------
    ndarray of float32 of shape (X, Y, Z, C)
    """
    total = 0.0
    for k in range(shifts):
        padding = [(k, round_up(n + k, multiple) - n - k) for n in volume.shape]
        batch = np.pad(np.asarray(volume, np.float32), padding)[None, ..., None]
        out = np.asarray(model.predict_on_batch(batch))[0]
        total = total + out[tuple(slice(k, k + n) for n in volume.shape)]
    return np.asarray(total / shifts, np.float32)


def probabilities_to_classes(probs: np.ndarray) -> np.ndarray:
    """Class index per voxel: argmax, or a 0.5 threshold for a single sigmoid channel.

    >>> probabilities_to_classes(np.array([[0.2, 0.7, 0.1]])).tolist()
    [1]
    >>> probabilities_to_classes(np.array([[0.2], [0.9]])).tolist()
    [0, 1]
    """
    if probs.shape[-1] == 1:
        return (probs[..., 0] > 0.5).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)


