"""Stream 3-D training patches, and whole validation volumes, from the memory-mapped cache.

A :class:`PatchDataset` feeds a network of volumes (``--model-type unet3d``): each
training batch holds cubes cut at random from the training scans (a share of them
centred near a voxel of the rarest class, as nnU-Net does, so the small ventricles are
seen often), read from disk as they are needed; each validation batch is one whole scan.
Memory stays flat however many subjects the cache holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np

from minc_keras.data.cache import SliceCache
from minc_keras.data.dataset import encode_targets
from minc_keras.preprocessing.transforms import round_up

#: Side of the training cubes, in voxels (a quarter of a 1 mm brain's volume or so).
PATCH_SIZE = 96

#: Training cubes per training scan and epoch.
PATCHES_PER_SCAN = 16

#: Share of training cubes centred near a voxel of the rarest class.
RARE_SHARE = 1 / 3

#: At most this many voxels of the rarest class are remembered per scan, to centre on.
RARE_VOXELS_KEPT = 4096


def cut_cube(volume: np.ndarray, start: tuple[int, ...], size: int) -> np.ndarray:
    """``volume[start : start + size]`` along each axis, zero-padded where it runs out.

    >>> cut_cube(np.arange(8).reshape(2, 2, 2), (1, 0, 0), 2)[..., 0].tolist()
    [[4, 6], [0, 0]]
    """
    box = tuple(slice(s, s + size) for s in start)
    part = np.asarray(volume[box])
    if part.shape == (size,) * 3:
        return part
    return np.pad(part, [(0, size - n) for n in part.shape])


class PatchDataset(keras.utils.PyDataset):
    """Batches ``(image, one-hot label)`` of 3-D cubes (training) or whole scans (otherwise).

    Parameters
    ----------
    cache : SliceCache
    category : {"train", "validate", "test"}
    batch_size : int
        Cubes per training batch; whole scans come one per batch.
    num_outputs : int
        Channels of the network output: K for softmax, 1 for a binary sigmoid.
    multiple : int
        Whole scans are zero-padded at their far ends to a multiple of this.
    patch_size : int, optional
        Side of the training cubes; ``None`` gives whole scans (validation, test).
    seed : int
    augment : callable, optional
        ``augment(images, classes, rng) -> (images, classes)`` applied to each batch of
        cubes (:class:`~minc_keras.data.augment.VolumeAugmenter`).
    rare_class : int, optional
        Class index that :data:`RARE_SHARE` of the cubes are centred near.
    """

    def __init__(self, cache: SliceCache, category: str, *, batch_size: int = 2,
                 num_outputs: int | None = None, multiple: int = 1,
                 patch_size: int | None = PATCH_SIZE, seed: int = 0,
                 augment: Callable | None = None, rare_class: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.cache = cache
        self.scans = cache.by_category(category)
        self.batch_size = batch_size if patch_size else 1
        self.num_outputs = num_outputs or cache.num_classes
        self.multiple = multiple
        self.patch_size = round_up(patch_size, multiple) if patch_size else None
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self.rare = {} if rare_class is None or not patch_size else {
            scan: self._voxels_of(scan, rare_class) for scan in self.scans}

    def _voxels_of(self, scan: int, cls: int) -> np.ndarray:
        """Up to :data:`RARE_VOXELS_KEPT` voxels of class ``cls`` in ``scan`` (int16)."""
        where = np.argwhere(np.asarray(self.cache.label(scan)) == self.cache.class_values[cls])
        if len(where) > RARE_VOXELS_KEPT:
            rng = np.random.default_rng([self.seed, scan])
            where = where[rng.choice(len(where), RARE_VOXELS_KEPT, replace=False)]
        return where.astype(np.int16)

    def __len__(self) -> int:
        if self.patch_size is None:
            return len(self.scans)
        return math.ceil(PATCHES_PER_SCAN * len(self.scans) / self.batch_size) if self.scans else 0

    @property
    def num_slices(self) -> int:
        """Training cubes (or whole scans) per epoch, for the log line."""
        return len(self) * self.batch_size

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.patch_size is None:
            return self._whole(self.scans[i])
        rng = np.random.default_rng([self.seed, self.epoch, i])  # the same in any order
        cubes = [self._cube(rng) for _ in range(self.batch_size)]
        images = np.stack([c[0] for c in cubes]).astype(np.float32)[..., None]
        classes = np.stack([c[1] for c in cubes])
        if self.augment is not None:
            images, classes = self.augment(images, classes, rng)
        return images, encode_targets(classes, self.num_outputs)

    def _cube(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random cube of image and class indices."""
        scan = self.scans[int(rng.integers(len(self.scans)))]
        image, labels = self.cache.image(scan), self.cache.label(scan)
        size, shape = self.patch_size, image.shape
        rare = self.rare.get(scan)
        if rare is not None and len(rare) and rng.random() < RARE_SHARE:
            centre = rare[rng.integers(len(rare))].astype(int)
            jitter = rng.integers(-(size // 4), size // 4 + 1, 3)
            start = [int(np.clip(c - size // 2 + j, 0, max(n - size, 0)))
                     for c, j, n in zip(centre, jitter, shape, strict=True)]
        else:
            start = [int(rng.integers(0, max(n - size, 0) + 1)) for n in shape]
        return (cut_cube(image, tuple(start), size),
                self.cache.classes(cut_cube(labels, tuple(start), size)))

    def _whole(self, scan: int) -> tuple[np.ndarray, np.ndarray]:
        """One whole scan, zero-padded at the far ends to the network's multiple."""
        image = np.asarray(self.cache.image(scan), np.float32)
        classes = self.cache.classes(np.asarray(self.cache.label(scan)))
        padding = [(0, round_up(n, self.multiple) - n) for n in image.shape]
        return (np.pad(image, padding)[None, ..., None],
                encode_targets(np.pad(classes, padding)[None], self.num_outputs))

    def set_epoch(self, epoch: int) -> None:
        """Draw the cubes of epoch ``epoch`` (0-based), so a resumed run repeats them."""
        self.epoch = epoch
