"""Segment one new scan with a trained model, in the scan's own grid.

The scan is brought to what the model expects by the model's
:class:`~minc_keras.preprocessing.preprocessor.Preprocessor` — RAS axis order, the
training voxel size, normalised intensities, cropped to the head — then the class
probabilities are put back onto the scan's grid by its inverse and turned into labels
there.

The probabilities of every class in the scan's grid are what a model of many classes
cannot afford (140 classes of a 1 mm head: 9 GB): unless all of them are asked for, they
are put back one class at a time, keeping only the running arg-max, the running entropy
of the quality score and the classes asked for. The labels, volumes and score are those
of the whole-probability path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from minc_keras.inference.probabilities import probabilities_to_classes
from minc_keras.inference.segmenter import Segmenter
from minc_keras.io import Volume
from minc_keras.preprocessing.preprocessor import Placement, Preprocessor

log = logging.getLogger(__name__)

#: Probabilities are clipped to this before the entropy of the quality score.
ENTROPY_FLOOR = 1e-7


@dataclass
class Segmentation:
    """Result of segmenting one scan (arrays in the scan's own grid).

    ``probabilities`` has every class's channel (shape ``labels.shape + (C,)``) when all
    were asked for, else None; ``class_maps`` holds the probability maps of the classes
    asked for by index. ``qc_entropy`` is the model's mean normalised entropy over the
    voxels labelled foreground (:func:`minc_keras.predict.qc.normalised_entropy`), or
    None where the whole probabilities are kept (computed from them).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    classes: np.ndarray
    class_maps: dict[int, np.ndarray] = field(default_factory=dict)
    qc_entropy: float | None = None


def segment_volume(segmenter: Segmenter, volume: Volume, *, batch_size: int = 8,
                   probabilities: bool | Sequence[int] = True) -> Segmentation:
    """Labels, probabilities and class indices of ``volume`` in its own grid.

    The scan goes through the model's own preprocessing
    (:attr:`~minc_keras.models.info.ModelInfo.preprocessor`: the normalisation, crop
    margin and voxel size stored at training) forward, and the probabilities through its
    inverse.

    Parameters
    ----------
    segmenter : Segmenter
        A model (or multi-view ensemble) saved by ``minc-keras train``.
    volume : Volume
        The scan, any orientation and voxel size.
    batch_size : int
        Slices per forward pass.
    probabilities : bool or sequence of int
        True: every class's probabilities in the scan's grid (``probabilities``); False:
        none, only the labels and the quality score; class indices: those classes' maps
        (``class_maps``).

    Returns
    -------
    Segmentation
        ``labels`` holds the original label values.
    """
    info = segmenter.info
    preprocessor = info.preprocessor
    prepared = preprocessor.forward(volume.data, volume.affine)
    if (probabilities is not True and info.num_outputs > 1 and segmenter.streams
            and not prepared.placement.resampled):
        wanted = [] if probabilities is False else [int(c) for c in probabilities]
        return _slice_by_slice(segmenter, preprocessor, prepared.placement, prepared.data,
                               np.asarray(info.class_values, dtype=np.int32), wanted,
                               batch_size=batch_size)
    probs = np.asarray(segmenter.probabilities(prepared.data, batch_size=batch_size),
                       np.float32)
    channels = probs.shape[-1]
    values = np.asarray(info.class_values, dtype=np.int32)
    if probabilities is True or channels == 1:
        background = np.zeros(channels, np.float32)
        if channels > 1:
            background[0] = 1.0  # outside the head: certainly class 0
        full = preprocessor.inverse(probs, prepared.placement, fill=background)
        classes = probabilities_to_classes(full)
        labels = values[classes] if channels > 1 else values[1] * classes
        kept = [] if probabilities in (True, False) else list(probabilities)
        return Segmentation(labels=np.ascontiguousarray(labels.astype(np.int16)),
                            probabilities=full if probabilities is True else None,
                            classes=np.ascontiguousarray(classes),
                            class_maps={c: full[..., c] for c in kept})
    wanted = [] if probabilities is False else [int(c) for c in probabilities]
    return _class_by_class(preprocessor, prepared.placement, probs, values, wanted)


def _class_by_class(preprocessor: Preprocessor, placement: Placement, probs: np.ndarray,
                    values: np.ndarray, wanted: list[int]) -> Segmentation:
    """Labels, quality score and the ``wanted`` maps, putting back one class at a time.

    The arg-max keeps the first of equal probabilities, as :func:`numpy.argmax` does, so
    the labels are those of :func:`probabilities_to_classes` over the whole array.
    """
    channels = probs.shape[-1]
    best = classes = entropy = None
    maps: dict[int, np.ndarray] = {}
    for c in range(channels):
        channel = preprocessor.unzoom(probs[..., c], placement)
        if c in wanted:  # outside the head: certainly class 0
            maps[c] = preprocessor.place(channel, placement, fill=1.0 if c == 0 else 0.0)
        clipped = np.clip(channel, ENTROPY_FLOOR, 1.0)
        term = -(clipped * np.log(clipped)).astype(np.float64)
        if best is None:
            best, classes, entropy = channel.copy(), np.zeros(channel.shape, np.uint8), term
            continue
        better = channel > best
        best[better], classes[better] = channel[better], c
        entropy += term
    foreground = classes > 0
    qc = (float(entropy[foreground].mean() / np.log(channels)) if foreground.any()
          else float("nan"))
    full = preprocessor.place(classes, placement, fill=0)
    return Segmentation(labels=np.ascontiguousarray(values[full].astype(np.int16)),
                        probabilities=None, classes=full, class_maps=maps, qc_entropy=qc)


def _slice_by_slice(segmenter: Segmenter, preprocessor: Preprocessor, placement: Placement,
                    data: np.ndarray, values: np.ndarray, wanted: list[int], *,
                    batch_size: int) -> Segmentation:
    """Labels, quality score and the ``wanted`` maps, a batch of slices at a time.

    Only the running class indices (and the ``wanted`` maps) of the preprocessed grid
    are kept, never every class's probabilities; the scan was not resampled, so its
    grid's voxels are those of the preprocessed grid, and everything is as the whole
    probabilities give it.
    """
    classes = np.zeros(data.shape, np.uint8)  # slices with nothing: class 0
    maps = {c: np.full(data.shape, 1.0 if c == 0 else 0.0, np.float32) for c in wanted}
    entropy_sum, foreground = 0.0, 0
    for axis, ks, probs in segmenter.slice_chunks(data, batch_size=batch_size):
        chunk = probabilities_to_classes(probs)
        np.moveaxis(classes, axis, 0)[ks] = chunk
        for c, map_ in maps.items():
            np.moveaxis(map_, axis, 0)[ks] = probs[..., c]
        inside = chunk > 0
        if inside.any():
            clipped = np.clip(probs[inside], ENTROPY_FLOOR, 1.0)
            entropy_sum += float((-(clipped * np.log(clipped)).sum(axis=-1)).sum(dtype=np.float64))
            foreground += int(inside.sum())
    qc = entropy_sum / foreground / np.log(len(values)) if foreground else float("nan")
    full = preprocessor.place(classes, placement, fill=0)
    return Segmentation(labels=np.ascontiguousarray(values[full].astype(np.int16)),
                        probabilities=None, classes=full,
                        class_maps={c: preprocessor.place(m, placement, fill=1.0 if c == 0 else 0.0)
                                    for c, m in maps.items()},
                        qc_entropy=float(qc))
