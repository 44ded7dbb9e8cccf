"""One preprocessing contract for training and prediction.

:class:`Preprocessor` brings a scan to what the network sees — RAS axis order, intensities
normalised inside the head, cropped to the head, resampled to the training voxel size —
and puts an array the network produced back into the scan's own grid. The cache
(:mod:`minc_keras.data.cache`) and prediction (:mod:`minc_keras.inference.segment`) both
go through it, and its parameters are stored in the model
(:meth:`Preprocessor.info_fields`) and read back at prediction, so the two cannot drift
apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from minc_keras.preprocessing.transforms import (
    bounding_box,
    brain_mask,
    canonical_orientation,
    from_canonical,
    normalise_intensity,
    to_canonical,
)

#: Voxel sizes within this fraction of the training ones count as equal: no resampling.
ZOOM_TOLERANCE = 0.02


@dataclass(frozen=True)
class Placement:
    """Where a preprocessed (cropped, RAS-ordered) array sits in its scan.

    Parameters
    ----------
    affine : ndarray of shape (4, 4)
        The scan's own voxel-to-world affine.
    shape : tuple of int
        The scan's own array shape (3 axes).
    start : tuple of int
        First voxel of the crop box in the RAS-ordered grid.
    crop_shape : tuple of int
        Shape of the crop box in the RAS-ordered grid (before any resampling).
    zoom : tuple of float
        Resampling factors applied after cropping (1 where none).
    """

    affine: np.ndarray
    shape: tuple[int, ...]
    start: tuple[int, ...]
    crop_shape: tuple[int, ...]
    zoom: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def box(self) -> tuple[slice, ...]:
        """The crop box in the RAS-ordered grid."""
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.crop_shape, strict=True))

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        """The scan's shape in RAS axis order.

        >>> flipped_zyx = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1.]])
        >>> Placement(flipped_zyx, (2, 3, 4), (0, 0, 0), (4, 3, 2)).canonical_shape
        (4, 3, 2)
        """
        shape = [0, 0, 0]
        for axis, (ras_axis, _) in enumerate(canonical_orientation(np.asarray(self.affine))):
            shape[int(ras_axis)] = int(self.shape[axis])
        return tuple(shape)

    @property
    def resampled(self) -> bool:
        """Whether the preprocessed array was resampled to another voxel size."""
        return any(f != 1.0 for f in self.zoom)


@dataclass
class Preprocessed:
    """What :meth:`Preprocessor.forward` makes of one scan.

    Attributes
    ----------
    data : ndarray of float32 of shape (X, Y, Z)
        Normalised intensities, RAS axis order, cropped (and resampled, if asked).
    placement : Placement
        Where ``data`` sits in the scan; :meth:`Preprocessor.inverse` takes it.
    intensity_range : (float, float)
        The intensities that mapped to 0 and 1.
    labels : ndarray or None
        The labels given to ``forward``, RAS order, cropped with ``data`` (never resampled).
    """

    data: np.ndarray
    placement: Placement
    intensity_range: tuple[float, float]
    labels: np.ndarray | None = None

    @property
    def box(self) -> tuple[slice, ...]:
        """The crop box in the RAS-ordered grid."""
        return self.placement.box

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        """The scan's shape in RAS axis order."""
        return self.placement.canonical_shape

    @property
    def zoom(self) -> tuple[float, ...]:
        """Resampling factors applied after cropping (1 where none)."""
        return self.placement.zoom


@dataclass(frozen=True)
class Preprocessor:
    """How a scan is prepared for the network, and how its output is put back.

    Parameters
    ----------
    method : str
        Intensity normalisation; ``percentile``: the ``low`` and ``high`` percentiles of
        the head's voxels map to 0 and 1, clipped to [0, ``clip``].
    low, high, clip : float
        Its parameters.
    crop_margin : int
        Voxels kept around the head's bounding box.
    voxel_sizes_mm : tuple of float, optional
        Resample to these voxel sizes (RAS order) after cropping; None keeps the scan's
        own (training stores its arrays unresampled; prediction resamples to the
        training voxel size).

    Examples
    --------
    >>> data = np.zeros((8, 6, 10), np.float32)
    >>> data[2:5, 1:4, 3:8] = np.arange(1, 46).reshape(3, 3, 5)
    >>> prep = Preprocessor(crop_margin=1).forward(data, np.eye(4))
    >>> prep.data.shape, prep.box[0], round(float(prep.data.max()), 3)
    ((5, 5, 7), slice(1, 6, None), 1.005)
    >>> back = Preprocessor().inverse(prep.data, prep.placement)
    >>> bool((back[data == 0] == 0).all()), back.shape
    (True, (8, 6, 10))
    """

    method: str = "percentile"
    low: float = 0.5
    high: float = 99.5
    clip: float = 1.5
    crop_margin: int = 4
    voxel_sizes_mm: tuple[float, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.method != "percentile":
            raise ValueError(f"unknown intensity normalisation {self.method!r}; "
                             "this version knows 'percentile'")
        if self.voxel_sizes_mm is not None:
            object.__setattr__(self, "voxel_sizes_mm",
                               tuple(float(v) for v in self.voxel_sizes_mm))

    @classmethod
    def from_info_fields(cls, normalisation: dict | None = None, crop_margin: int | None = None,
                         voxel_sizes_mm: list[float] | None = None) -> Preprocessor:
        """The preprocessor a model's stored fields describe (defaults where one is missing).

        >>> Preprocessor.from_info_fields({"method": "percentile", "low": 1, "high": 99})
        Preprocessor(method='percentile', low=1.0, high=99.0, clip=1.5, crop_margin=4, \
voxel_sizes_mm=None)
        """
        norm = dict(normalisation or {})
        defaults = cls()
        return cls(method=str(norm.get("method", defaults.method)),
                   low=float(norm.get("low", defaults.low)),
                   high=float(norm.get("high", defaults.high)),
                   clip=float(norm.get("clip", defaults.clip)),
                   crop_margin=int(defaults.crop_margin if crop_margin is None else crop_margin),
                   voxel_sizes_mm=voxel_sizes_mm)

    def info_fields(self) -> dict:
        """The fields a model stores about its preprocessing (``normalisation``,
        ``crop_margin``, ``voxel_sizes_mm``); :meth:`from_info_fields` reads them back.

        >>> Preprocessor().info_fields()["normalisation"]
        {'method': 'percentile', 'low': 0.5, 'high': 99.5, 'clip': 1.5}
        """
        return {"normalisation": {"method": self.method, "low": self.low, "high": self.high,
                                  "clip": self.clip},
                "crop_margin": self.crop_margin,
                "voxel_sizes_mm": (None if self.voxel_sizes_mm is None
                                   else list(self.voxel_sizes_mm))}

    def forward(self, data: np.ndarray, affine: np.ndarray, *,
                labels: np.ndarray | None = None) -> Preprocessed:
        """Reorient, normalise, crop (and resample) one scan.

        Intensities are normalised inside :func:`brain_mask` of the scan alone, so a scan
        is normalised the same way with or without labels; ``labels`` only widen the crop
        box, so that no labelled voxel is cut off.

        Parameters
        ----------
        data : ndarray of shape (I, J, K)
            The scan's intensities in its own array order.
        affine : ndarray of shape (4, 4)
            Its voxel-to-world affine.
        labels : ndarray of shape (I, J, K), optional
            Its labels, in the same grid (training).

        Returns
        -------
        Preprocessed
        """
        affine = np.asarray(affine, dtype=float)
        canonical, canonical_affine = to_canonical(np.asarray(data, np.float32), affine)
        mask = brain_mask(canonical)
        cropped_labels = None
        if labels is None:
            box = bounding_box(mask, self.crop_margin)
        else:
            ras_labels, _ = to_canonical(np.asarray(labels), affine)
            box = bounding_box(mask | (ras_labels > 0), self.crop_margin)
            cropped_labels = ras_labels[box]
        norm, intensity_range = normalise_intensity(canonical[box], mask[box], low=self.low,
                                                    high=self.high, clip=self.clip)
        zoom = self._zoom(canonical_affine)
        if any(f != 1.0 for f in zoom):
            norm = ndimage.zoom(norm, zoom, order=1)
        placement = Placement(affine=affine, shape=tuple(int(n) for n in data.shape[:3]),
                              start=tuple(s.start for s in box),
                              crop_shape=tuple(s.stop - s.start for s in box), zoom=zoom)
        return Preprocessed(norm, placement, intensity_range, cropped_labels)

    def _zoom(self, canonical_affine: np.ndarray) -> tuple[float, ...]:
        """Factors from the scan's voxel sizes to ``voxel_sizes_mm`` (1 within 2 %)."""
        if self.voxel_sizes_mm is None:
            return (1.0, 1.0, 1.0)
        voxel = np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0))
        factors = voxel / np.asarray(self.voxel_sizes_mm, float)
        # within the tolerance the grids are taken as equal: no interpolation, exact voxels
        factors = np.where(np.abs(factors - 1) < ZOOM_TOLERANCE, 1.0, factors)
        return tuple(float(f) for f in factors)

    def inverse(self, array: np.ndarray, placement: Placement, *,
                fill: float | np.ndarray = 0) -> np.ndarray:
        """Put a preprocessed-grid array back into the scan's own grid and axis order.

        Parameters
        ----------
        array : ndarray of shape (X, Y, Z) or (X, Y, Z, C)
            In the grid of :attr:`Preprocessed.data` (cropped, RAS order, resampled if the
            forward pass was): probabilities, class indices or label values.
        placement : Placement
            From the forward pass (or a cached scan's record of it).
        fill : float or ndarray of shape (C,)
            Value outside the crop box, per channel for a 4-D array (e.g. probability 1
            for the background class).

        Returns
        -------
        ndarray of shape ``placement.shape`` (+ (C,))
            Same dtype as ``array``. A resampled array is resized back linearly
            (floating point) or to the nearest voxel (integers).
        """
        array = np.asarray(array)
        if placement.resampled:
            if array.ndim == 4:
                array = np.stack([self.unzoom(array[..., c], placement)
                                  for c in range(array.shape[-1])], axis=-1)
            else:
                array = self.unzoom(array, placement)
        return self.place(array, placement, fill=fill)

    @staticmethod
    def unzoom(array: np.ndarray, placement: Placement) -> np.ndarray:
        """One 3-D array of the preprocessed grid resampled to the scan's crop box.

        The first step of :meth:`inverse`, for one channel at a time (a model of many
        classes puts its probabilities back class by class, never all at once): linear
        for floating point, nearest voxel for integers; unchanged when the forward pass
        did not resample.
        """
        array = np.asarray(array)
        if not placement.resampled:
            return array
        order = 1 if np.issubdtype(array.dtype, np.floating) else 0
        return _resize(array, placement.crop_shape, order)

    @staticmethod
    def place(array: np.ndarray, placement: Placement, *,
              fill: float | np.ndarray = 0) -> np.ndarray:
        """An array of the scan's crop box (:meth:`unzoom`) put into the scan's own grid
        and axis order, ``fill`` outside the box (the second step of :meth:`inverse`)."""
        array = np.asarray(array)
        canvas = np.empty((*placement.canonical_shape, *array.shape[3:]), dtype=array.dtype)
        canvas[...] = fill
        canvas[placement.box] = array
        return np.ascontiguousarray(from_canonical(canvas, np.asarray(placement.affine)))


def _resize(array: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """Resample ``array`` onto ``shape`` (same field of view, voxel centres)."""
    factors = [n / m for n, m in zip(shape, array.shape, strict=True)]
    out = ndimage.zoom(array, factors, order=order, grid_mode=False)
    if out.shape != tuple(shape):  # zoom may be off by one; pad or crop to the exact grid
        out = out[tuple(slice(0, n) for n in shape)]
        out = np.pad(out, [(0, n - m) for n, m in zip(shape, out.shape, strict=True)], mode="edge")
    return out
