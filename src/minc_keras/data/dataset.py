"""Stream training batches of 2-D slices from the memory-mapped cache.

A :class:`SliceDataset` is a ``keras.utils.PyDataset``: Keras asks it for batch ``i``
and it reads just those slices from disk, so memory stays flat however many subjects
the cache holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np

from minc_keras.data.cache import SliceCache
from minc_keras.preprocessing.transforms import VIEW_AXES, round_up


def slice_size(cache: SliceCache, view: str, multiple: int) -> tuple[int, int]:
    """In-plane size that fits every cached scan's slices for ``view``.

    Parameters
    ----------
    cache : SliceCache
    view : {"axial", "coronal", "sagittal"}
    multiple : int
        Both sides are rounded up to a multiple of this (what the network needs).
    """
    axis = VIEW_AXES[view]
    plane = [a for a in range(3) if a != axis]
    height = max(s.crop_shape[plane[0]] for s in cache.scans)
    width = max(s.crop_shape[plane[1]] for s in cache.scans)
    return round_up(height, multiple), round_up(width, multiple)


def take_slices(volume: np.ndarray, axis: int, indices: Sequence[int] | np.ndarray,
                size: tuple[int, int]) -> np.ndarray:
    """Slices ``indices`` of ``volume`` along ``axis``, zero-padded centred to ``size``.

    Parameters
    ----------
    volume : ndarray of shape (X, Y, Z, ...)
    axis : int
        0, 1 or 2.
    indices : sequence of int
    size : (int, int)

    Returns
    -------
    ndarray of shape (len(indices), size[0], size[1], ...)

    Examples
    --------
    >>> v = np.arange(24).reshape(2, 3, 4)
    >>> take_slices(v, 2, [1], (4, 4))[0]
    array([[ 0,  0,  0,  0],
           [ 1,  5,  9,  0],
           [13, 17, 21,  0],
           [ 0,  0,  0,  0]])
    """
    stack = np.moveaxis(np.asarray(volume), axis, 0)[np.asarray(indices)]
    h, w = stack.shape[1:3]
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    out = np.zeros((len(stack), *size, *stack.shape[3:]), dtype=stack.dtype)
    out[:, top:top + h, left:left + w] = stack
    return out


def encode_targets(classes: np.ndarray, num_outputs: int) -> np.ndarray:
    """One-hot class indices for softmax outputs, a 0/1 channel for a single sigmoid.

    >>> encode_targets(np.array([[0, 2]]), 3).tolist()
    [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    >>> encode_targets(np.array([[0, 1]]), 1).tolist()
    [[[0.0], [1.0]]]
    """
    if num_outputs == 1:
        return (classes > 0).astype(np.float32)[..., None]
    return np.eye(num_outputs, dtype=np.float32)[classes]


class SliceDataset(keras.utils.PyDataset):
    """Batches ``(image, one-hot label)`` of one split category and one view.

    Parameters
    ----------
    cache : SliceCache
    category : {"train", "validate", "test"}
    view : {"axial", "coronal", "sagittal"}
    batch_size : int
    num_outputs : int
        Channels of the network output: K for softmax, 1 for a binary sigmoid.
    multiple : int
        Slice sides are padded to a multiple of this.
    shuffle : bool
        Shuffle the slices, in an order fixed by ``seed`` and the epoch (training); the
        trainer calls :meth:`set_epoch` as each epoch begins.
    seed : int
    augment : callable, optional
        ``augment(images, classes, rng) -> (images, classes)`` applied to each batch.
    drop_remainder : bool
        Leave out the last, incomplete batch (data-parallel training splits every batch
        evenly over the devices).
    repeat_class : int, optional
        Class index whose slices are shown twice per epoch (the slices that hold a small
        structure, such as the ventricles, then make up more of each batch).
    """

    def __init__(self, cache: SliceCache, category: str, view: str = "axial", *,
                 batch_size: int = 16, num_outputs: int | None = None, multiple: int = 1,
                 shuffle: bool = False, seed: int = 0,
                 augment: Callable | None = None, drop_remainder: bool = False,
                 repeat_class: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cache = cache
        self.axis = VIEW_AXES[view]
        self.batch_size = batch_size
        self.num_outputs = num_outputs or cache.num_classes
        self.size = slice_size(cache, view, multiple)
        self.shuffle = shuffle
        # an augmentation that flips left to right needs to know where left is in a slice
        self.augment = augment.for_view(view) if hasattr(augment, "for_view") else augment
        self.drop_remainder = drop_remainder
        self.seed = seed
        self.epoch = 0
        self.index = np.array(
            [(scan, k) for scan in cache.by_category(category)
             for k in cache.scans[scan].nonempty[self.axis]], dtype=np.int64,
        ).reshape(-1, 2)
        if repeat_class is not None:
            self.index = np.concatenate([self.index, self._holding(repeat_class)])
        self._order = np.arange(len(self.index))
        self.set_epoch(0)

    def _holding(self, cls: int) -> np.ndarray:
        """The rows of :attr:`index` whose label slice holds class ``cls``."""
        value = self.cache.class_values[cls]
        others = tuple(a for a in range(3) if a != self.axis)
        rows = [np.empty((0, 2), np.int64)]
        for scan in np.unique(self.index[:, 0]):
            present = np.asarray(self.cache.label(scan) == value).any(axis=others)
            mine = self.index[self.index[:, 0] == scan]
            rows.append(mine[present[mine[:, 1]]])
        return np.concatenate(rows)

    def __len__(self) -> int:
        if self.drop_remainder:
            return len(self.index) // self.batch_size
        return math.ceil(len(self.index) / self.batch_size)

    @property
    def num_slices(self) -> int:
        """Number of slices per epoch."""
        return len(self.index)

    def load(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image slices (N, H, W, 1) float32 and class slices (N, H, W) uint8 for ``rows``."""
        images, classes = [], []
        for scan in np.unique(rows[:, 0]):
            ks = rows[rows[:, 0] == scan, 1]
            images.append(take_slices(self.cache.image(scan), self.axis, ks, self.size))
            classes.append(take_slices(self.cache.label(scan), self.axis, ks, self.size))
        return (np.concatenate(images).astype(np.float32)[..., None],
                self.cache.classes(np.concatenate(classes)))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.index[self._order[i * self.batch_size:(i + 1) * self.batch_size]]
        images, classes = self.load(rows)
        if self.augment is not None:  # a generator per batch: the same whatever the order
            rng = np.random.default_rng([self.seed, self.epoch, i])
            images, classes = self.augment(images, classes, rng)
        return images, encode_targets(classes, self.num_outputs)

    def set_epoch(self, epoch: int) -> None:
        """Order the slices as epoch ``epoch`` (0-based) does, so a resumed run repeats it.

        >>> a = SliceDataset.__new__(SliceDataset); a.seed, a.shuffle = 3, True
        >>> a._order = np.arange(5); a.set_epoch(2); first = a._order.copy()
        >>> a.set_epoch(0); a.set_epoch(2); bool((a._order == first).all())
        True
        """
        self.epoch = epoch
        if self.shuffle:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self._order))



class InterleavedViews(keras.utils.PyDataset):
    """The batches of several views' :class:`SliceDataset` s, interleaved, for one network.

    Each batch holds the slices of one view (the views' slices differ in size); with
    ``shuffle`` the batches of all views come in an order fixed by ``seed`` and the epoch,
    otherwise view after view.

    Parameters
    ----------
    parts : list of SliceDataset
        One per view, over the same split category.
    shuffle : bool
    seed : int

    Examples
    --------
    >>> class Part(list):
    ...     num_slices = 0
    ...     def set_epoch(self, epoch): pass
    >>> views = InterleavedViews([Part("ab"), Part("xyz")])
    >>> len(views), [views[i] for i in range(len(views))]
    (5, ['a', 'b', 'x', 'y', 'z'])
    >>> mixed = InterleavedViews([Part("ab"), Part("xyz")], shuffle=True, seed=1)
    >>> sorted(mixed[i] for i in range(len(mixed))) == ['a', 'b', 'x', 'y', 'z']
    True
    """

    def __init__(self, parts: list[SliceDataset], *, shuffle: bool = False, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = parts
        self.shuffle = shuffle
        self.seed = seed
        self._batches = np.array([(k, i) for k, part in enumerate(parts)
                                  for i in range(len(part))], dtype=np.int64).reshape(-1, 2)
        self._order = np.arange(len(self._batches))
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def num_slices(self) -> int:
        """Number of slices per epoch, all views together."""
        return sum(part.num_slices for part in self.parts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        part, batch = self._batches[self._order[i]]
        return self.parts[part][int(batch)]

    def set_epoch(self, epoch: int) -> None:
        """Order the batches (and each view's slices) as epoch ``epoch`` (0-based) does."""
        for part in self.parts:
            part.set_epoch(epoch)
        if self.shuffle:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self._batches))
