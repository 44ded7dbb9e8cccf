"""A trained model, or a multi-view ensemble, loaded and ready to segment whole volumes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from minc_keras.core.errors import DatasetError
from minc_keras.data.cache import SliceCache
from minc_keras.inference.offsets import apply_offsets
from minc_keras.inference.probabilities import (
    predict_probabilities,
    probabilities_to_classes,
    slice_batches,
)
from minc_keras.models.info import ModelInfo
from minc_keras.models.saving import load_trained
from minc_keras.preprocessing.transforms import VIEW_AXES


class Segmenter:
    """A trained model, or a multi-view ensemble, ready to segment whole volumes.

    A run trained with ``--views axial,coronal,sagittal`` saves one model per view; the
    first file's metadata names the others (``ensemble``), and their probabilities are
    averaged (as FastSurfer does). A model trained at half resolution runs twice per
    slice, the second time shifted by a pixel (its ``shift_passes``; see
    :func:`predict_probabilities`). With ``tta`` each view also sees the left-right
    mirrored volume and its mirrored prediction is averaged in (the channels of paired
    classes, Left X and Right X, swapped back: :attr:`ModelInfo.mirror_classes`). The averaged
    probabilities are then shifted by the class offsets fitted on the validation scans
    after training (:mod:`minc_keras.training.calibration`), if the model has them.

    Parameters
    ----------
    members : list of (keras.Model, ModelInfo)
        Each model with its :func:`~minc_keras.models.info.read_info` metadata.
    tta : bool
        Flip test-time augmentation.
    calibrated : bool
        Apply the first model's ``class_offsets`` (if it has any); False gives the
        networks' own averaged probabilities.
    shift_passes : int, optional
        Passes per slice for every member instead of each model's own (benchmarks
        compare with 1).
    """

    def __init__(self, members: list[tuple[keras.Model, ModelInfo]], *, tta: bool = False,
                 calibrated: bool = True, shift_passes: int | None = None) -> None:
        self.members = [(model, _typed(info)) for model, info in members]
        self.tta = tta
        self.class_offsets = self.info.class_offsets if calibrated else None
        self.shift_passes = [int(shift_passes or info.shift_passes) for _, info in self.members]

    @property
    def info(self) -> ModelInfo:
        """Metadata of the first (primary) model: classes, preprocessing, calibration."""
        return self.members[0][1]

    @property
    def views(self) -> list[str]:
        """The view of each member."""
        return [info.view for _, info in self.members]

    def count_params(self) -> int:
        """Parameters of all members together (a network the views share counted once)."""
        shared = [model for model, info in self.members if info.shared_network]
        return (sum(model.count_params() for model, info in self.members
                    if not info.shared_network)
                + (shared[0].count_params() if shared else 0))

    def probabilities(self, volume: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
        """Averaged class probabilities of a preprocessed RAS-ordered volume.

        Parameters
        ----------
        volume : ndarray of shape (X, Y, Z)
            Normalised intensities in RAS axis order.
        batch_size : int
            Slices per forward pass.

        Returns
        -------
        ndarray of float32 of shape (X, Y, Z, C)
        """
        total = None
        count = 0
        for (model, info), shifts in zip(self.members, self.shift_passes, strict=True):
            for flipped in (False, True) if self.tta else (False,):
                source = volume[::-1] if flipped else volume
                probs = predict_probabilities(model, np.ascontiguousarray(source),
                                              view=info.view, multiple=info.multiple,
                                              batch_size=batch_size, shifts=shifts)
                if flipped:  # back to the scan's side; Left X was seen as Right X
                    probs = probs[::-1]
                    if info.mirror_classes is not None and probs.shape[-1] > 1:
                        probs = probs[..., np.asarray(info.mirror_classes)]
                total = probs if total is None else total + probs
                count += 1
        return apply_offsets(total / count, self.class_offsets)


    @property
    def streams(self) -> bool:
        """Whether :meth:`slice_chunks` gives what :meth:`probabilities` gives, slice batch
        by slice batch: one network of axial or coronal slices (whose slices hold the
        left-right axis, so a flipped pass flips each slice), or of sagittal slices
        without ``tta``."""
        if len(self.members) != 1:
            return False
        view = self.info.view
        return view in ("axial", "coronal") or (view == "sagittal" and not self.tta)

    def slice_chunks(self, volume: np.ndarray, *, batch_size: int = 8
                     ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The probabilities of :meth:`probabilities`, a batch of slices at a time.

        Only where :attr:`streams`. Yields ``(axis, ks, probs)``: the view's axis, the
        occupied slices along it and their probabilities ``(len(ks), *plane, C)``,
        averaged over the flipped pass and calibrated; the other slices are class 0.
        """
        if not self.streams:
            raise ValueError("this segmenter's probabilities cannot be taken slice by slice")
        (model, info), shifts = self.members[0], self.shift_passes[0]
        axis = VIEW_AXES[info.view]
        options = {"view": info.view, "multiple": info.multiple, "batch_size": batch_size,
                   "shifts": shifts}
        plain = slice_batches(model, volume, **options)
        if not self.tta:
            for ks, probs in plain:
                yield axis, ks, apply_offsets(probs, self.class_offsets)
            return
        # a slice holding the x axis (its first): the flipped scan's slice is the slice flipped
        flipped = slice_batches(model, np.ascontiguousarray(volume[::-1]), **options)
        for (ks, probs), (_, mirrored) in zip(plain, flipped, strict=True):
            mirrored = mirrored[:, ::-1]
            if info.mirror_classes is not None and mirrored.shape[-1] > 1:
                mirrored = mirrored[..., np.asarray(info.mirror_classes)]
            yield axis, ks, apply_offsets((probs + mirrored) / 2, self.class_offsets)


def load_segmenter(path: Path, *, tta: bool = False, calibrated: bool = True,
                   shift_passes: int | None = None) -> Segmenter:
    """Load ``path`` and the other views of its ensemble, if it has any.

    ``calibrated=False`` leaves out the class offsets of ``--calibrate``; ``shift_passes``
    replaces the models' own passes per slice
    (:class:`Segmenter`).
    """
    path = Path(path)
    model, info = load_trained(path, compile=False)
    members = [(model, info)]
    for name in info.ensemble[1:]:
        members.append(load_trained(path.parent / name, compile=False))
    return Segmenter(members, tta=tta, calibrated=calibrated, shift_passes=shift_passes)


def segment_cached(segmenter: Segmenter, cache: SliceCache, index: int,
                   batch_size: int = 8) -> np.ndarray:
    """Predicted class indices for cached scan ``index`` (cropped RAS grid)."""
    image = np.asarray(cache.image(index), dtype=np.float32)
    return probabilities_to_classes(segmenter.probabilities(image, batch_size=batch_size))


def check_classes(info: ModelInfo, cache: SliceCache, path: Path) -> None:
    """Refuse a model whose label values are not those of the prepared data."""
    info = _typed(info)
    if list(info.class_values) != cache.class_values:
        raise DatasetError(
            f"model {path} was trained on label values {info.class_values} but the prepared "
            f"data have {cache.class_values}; retrain with `clobber` or use the matching `target`"
        )


def _typed(info: ModelInfo | dict) -> ModelInfo:
    """``info`` as a :class:`ModelInfo` (callers may still hold the stored dictionary)."""
    return info if isinstance(info, ModelInfo) else ModelInfo.from_dict(info)
