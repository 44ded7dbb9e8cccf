"""Random changes to training slices that keep their labels true.

The development subjects are young adults scanned on one scanner; the people users
segment are not. :class:`SliceAugmenter` perturbs each training slice the way scans
differ in practice: mirror image, head pose and size (rotation, scaling), contrast
(gamma), receive-coil shading (a smooth multiplicative bias field) and noise; on request
also an older brain's anatomy (:func:`expand_class`: enlarged ventricles that push the
tissue around them aside). The geometric changes move the labels with the image (nearest
neighbour); the intensity changes touch the image only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SliceAugmenter:
    """Callable ``(images, classes, rng) -> (images, classes)`` for :class:`SliceDataset`.

    Parameters
    ----------
    flip : float
        Probability of mirroring a slice left to right (columns).
    rotate_deg : float
        Rotations are drawn uniformly in ``[-rotate_deg, rotate_deg]`` degrees.
    scale : float
        Zoom factors are drawn uniformly in ``[1 - scale, 1 + scale]``.
    gamma : float
        ``log(gamma)`` is drawn uniformly in ``[-gamma, gamma]``; intensities ``x``
        (normalised, about 0 to 1 inside the head) become ``x ** gamma``.
    bias : float
        Peak amplitude of the multiplicative bias field (0.2: up to +-20 %).
    noise : float
        Largest standard deviation of added Gaussian noise, in normalised units.
    probability : float
        Each slice is changed with this probability (otherwise passed through).
    atrophy : float
        Probability that a slice's ``atrophy_class`` is enlarged (:func:`expand_class`),
        drawn independently of ``probability``; 0 turns it off.
    atrophy_class : int, optional
        The class to enlarge: the ventricles (CSF) for tissue labels.
    atrophy_voxels : float
        The growth at the class's boundary is drawn uniformly in ``[1, atrophy_voxels]``.
    mirror_classes : tuple of int, optional
        The class each class becomes under a left-right flip (Left X <-> Right X;
        :func:`~minc_keras.data.label_table.mirror_classes`). When given, the flip mirrors
        the scan's left-right axis (``left_right_axis``) and swaps the paired classes, so
        a left structure stays labelled left; a slice without that axis (sagittal) is
        mirrored along its columns, which keeps every structure on its side. Without it
        the flip mirrors the columns and keeps the classes (tissue labels have no sides).
    left_right_axis : int, optional
        The slice axis (0 rows, 1 columns) along the scan's left-right (RAS x) axis; None
        when the slice does not hold it. :meth:`for_view` sets it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = np.random.default_rng(1).random((4, 16, 16, 1)).astype(np.float32)
    >>> classes = (images[..., 0] > 0.5).astype(np.uint8)
    >>> out, labels = SliceAugmenter()(images, classes, rng)
    >>> out.shape, labels.shape, labels.dtype
    ((4, 16, 16, 1), (4, 16, 16), dtype('uint8'))
    >>> set(np.unique(labels)) <= {0, 1}
    True
    """

    flip: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    gamma: float = 0.3
    bias: float = 0.2
    noise: float = 0.03
    probability: float = 0.8
    atrophy: float = 0.0
    atrophy_class: int | None = None
    atrophy_voxels: float = 6.0
    mirror_classes: tuple[int, ...] | None = None
    left_right_axis: int | None = None

    def for_view(self, view: str) -> SliceAugmenter:
        """This augmentation for the slices of ``view`` (its left-right axis set).

        A slice of the RAS-ordered volume along axis ``a`` keeps the other two axes in
        order, so the x axis is its rows in axial and coronal slices, and absent from
        sagittal ones.

        >>> SliceAugmenter().for_view("coronal").left_right_axis
        0
        """
        return replace(self, left_right_axis=None if view == "sagittal" else 0)

    def mirrored(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A slice and its classes flipped (see ``mirror_classes``)."""
        if self.mirror_classes is None or self.left_right_axis is None:
            return image[:, ::-1], labels[:, ::-1]
        flip = (slice(None, None, -1), slice(None)) if self.left_right_axis == 0 \
            else (slice(None), slice(None, None, -1))
        mirror = np.asarray(self.mirror_classes, dtype=labels.dtype)
        return image[flip], mirror[labels[flip]]

    def __call__(self, images: np.ndarray, classes: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment a batch: images ``(N, H, W, 1)`` float, classes ``(N, H, W)`` int."""
        images = np.array(images, dtype=np.float32, copy=True)
        classes = np.array(classes, copy=True)
        for i in range(len(images)):
            images[i, ..., 0], classes[i] = self.atrophied(images[i, ..., 0], classes[i], rng)
            if rng.random() >= self.probability:
                continue
            images[i, ..., 0], classes[i] = self.geometry(images[i, ..., 0], classes[i], rng)
            images[i, ..., 0] = self.intensity(images[i, ..., 0], rng)
        return images, classes

    def atrophied(self, image: np.ndarray, labels: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """With probability ``atrophy``, ``atrophy_class`` grown by 1 to ``atrophy_voxels``."""
        if self.atrophy_class is None or not self.atrophy or rng.random() >= self.atrophy:
            return image, labels
        return expand_class(image, labels, self.atrophy_class,
                            rng.uniform(1.0, self.atrophy_voxels))

    def geometry(self, image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mirror, rotate and zoom one slice about its centre; labels by nearest neighbour."""
        if rng.random() < self.flip:
            image, labels = self.mirrored(image, labels)
        angle = np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(1 - self.scale, 1 + self.scale)
        if angle == 0 and zoom == 1:
            return image, labels
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        matrix = np.array([[cos, -sin], [sin, cos]])
        centre = (np.asarray(image.shape) - 1) / 2
        offset = centre - matrix @ centre
        # Only the output pixels that the head maps to can be non-zero (the background
        # is 0 in image and labels): resample that box alone, about half the slice.
        head = nonzero_box((image != 0) | (labels != 0), 1)
        if head is None:
            return image, labels
        corners = np.array(np.meshgrid(*[(s.start, s.stop - 1) for s in head])).reshape(2, -1)
        mapped = np.linalg.solve(matrix, corners - offset[:, None])
        low = np.clip(np.floor(mapped.min(axis=1)), 0, None).astype(int)
        high = np.minimum(np.ceil(mapped.max(axis=1)).astype(int) + 1, image.shape)
        out_image, out_labels = np.zeros_like(image), np.zeros_like(labels)
        if np.any(high <= low):  # zoomed or turned out of the slice
            return out_image, out_labels
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        shape, offset = tuple(high - low), offset + matrix @ low
        out_image[box] = ndimage.affine_transform(image, matrix, offset, output_shape=shape,
                                                  order=1, mode="constant")
        out_labels[box] = ndimage.affine_transform(labels, matrix, offset, output_shape=shape,
                                                   order=0, mode="constant")
        return out_image, out_labels

    def intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gamma, a smooth bias field and noise, inside the head only (background stays 0)."""
        head = image > 0
        box = nonzero_box(head, 0)  # the head's box: outside it all stays 0
        if box is None:
            return image
        # float32 throughout (a numpy float64 scalar would make every step float64)
        part = np.clip(image[box], 0, None, dtype=np.float32)
        part **= float(np.exp(rng.uniform(-self.gamma, self.gamma)))
        if self.bias:
            part *= self._bias_field(image.shape, rng)[box]
        if self.noise:
            sd = rng.uniform(0, self.noise)
            part += sd * rng.standard_normal(part.shape, dtype=np.float32)
        part[~head[box]] = 0
        out = np.zeros(image.shape, np.float32)
        out[box] = part
        return out

    def _bias_field(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """``exp`` of a random linear-plus-quadratic field (2-D or 3-D) with peak ``+-bias``.

        Terms: each coordinate (last axis first), the products of pairs, the squares. The
        field is summed from 1-D and 2-D pieces broadcast over the image, not from full-size
        coordinate grids: a fifth of the time on a 96^3 cube, the same values.
        """
        dims = len(shape)
        # coordinate d in [-1, 1] along axis d, shaped to broadcast; last axis first
        axes = [np.linspace(-1, 1, n).reshape([n if k == d else 1 for k in range(dims)])
                for d, n in enumerate(shape)][::-1]
        pairs = [(a, b) for k, a in enumerate(axes) for b in axes[k + 1:]]
        weights = rng.uniform(-1, 1, 2 * dims + len(pairs))
        linear, cross, square = np.split(weights, [dims, dims + len(pairs)])
        surface = np.zeros(shape)
        for a, w_linear, w_square in zip(axes, linear, square, strict=True):
            surface += w_linear * a + w_square * (a**2 - 0.5)
        for (a, b), w in zip(pairs, cross, strict=True):
            surface += w * (a * b)
        surface *= np.log1p(self.bias) / max(np.abs(surface).max(), 1e-6)
        return np.exp(surface, out=surface)


def nonzero_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """The bounding box of ``mask``'s true elements grown by ``margin``, inside the array.

    ``None`` when ``mask`` is all false.

    >>> mask = np.zeros((6, 8), bool); mask[2, 3:5] = True
    >>> nonzero_box(mask, 1)
    (slice(1, 4, None), slice(2, 6, None))
    >>> nonzero_box(mask, 9)
    (slice(0, 6, None), slice(0, 8, None))
    """
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hits):
            return None
        box.append(slice(max(int(hits[0]) - margin, 0),
                         min(int(hits[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)


def expand_class(image: np.ndarray, labels: np.ndarray, cls: int,
                 voxels: float) -> tuple[np.ndarray, np.ndarray]:
    """Warp an image and its labels so that class ``cls`` grows by about ``voxels``.

    A stand-in for atrophy: the ventricles of an older brain are larger and push the
    white matter around them aside. Every output voxel samples the input nearer the class,
    along the gradient of the class mask smoothed with a Gaussian of ``1.5 * voxels``,
    scaled so that the largest move (at the class's boundary) is ``voxels``: the class
    spreads outwards, the tissue next to it is compressed, and a few ``voxels`` away
    nothing moves. That smoothing keeps the warp free of folds outside the class. Works on
    2-D slices and 3-D volumes alike; an image or label without the class is returned
    unchanged.

    Parameters
    ----------
    image : ndarray
        Intensities (linear interpolation).
    labels : ndarray
        Class or label values, same shape (nearest neighbour).
    cls : int
        The value in ``labels`` to enlarge.
    voxels : float
        Growth at the boundary, in voxels (0: nothing changes).

    Examples
    --------
    >>> labels = np.zeros((40, 40), np.uint8)
    >>> labels[15:25, 15:25] = 1
    >>> image = np.where(labels == 1, 0.2, 0.8).astype(np.float32)
    >>> new_image, new_labels = expand_class(image, labels, 1, 3.0)
    >>> int((labels == 1).sum()), int((new_labels == 1).sum()) > 200
    (100, True)
    >>> bool(np.all(new_labels[:5] == labels[:5]))  # far away: unchanged
    True
    """
    sigma = 1.5 * voxels
    # Nothing moves farther than the smoothing kernel reaches (4 sigma, scipy's default
    # truncation) from the class: warp that box alone, two voxels wider so that the
    # gradient at its edges is exactly 0, as it is there in the whole image.
    box = nonzero_box(labels == cls, int(4.0 * sigma + 0.5) + 2) if voxels > 0 else None
    if box is None:
        return image, labels
    smooth = ndimage.gaussian_filter((labels[box] == cls).astype(np.float32), sigma)
    gradient = np.stack(np.gradient(smooth))
    peak = float(np.sqrt((gradient**2).sum(axis=0)).max())
    if peak < 1e-8:  # the class fills the whole image
        return image, labels
    corner = np.array([s.start for s in box], np.float32).reshape(-1, *[1] * labels.ndim)
    coordinates = np.indices(smooth.shape, dtype=np.float32) + corner
    coordinates += (voxels / peak) * gradient
    image, labels = np.array(image, np.float32), labels.copy()
    image[box] = ndimage.map_coordinates(image, coordinates, order=1, mode="nearest")
    labels[box] = ndimage.map_coordinates(labels, coordinates, order=0, mode="nearest")
    return image, labels


def darkest_class(images: np.ndarray, classes: np.ndarray) -> int | None:
    """The foreground class of lowest mean intensity (CSF in a T1 scan).

    ``None`` when the labels have fewer than two foreground classes (a brain mask, say):
    there is then no tissue class to enlarge.

    >>> image = np.array([0.0, 0.2, 0.5, 0.9, 0.25])
    >>> darkest_class(image, np.array([0, 1, 2, 3, 1]))
    1
    >>> darkest_class(image, np.array([0, 1, 1, 1, 1])) is None
    True
    """
    classes = np.asarray(classes).ravel()
    images = np.asarray(images, dtype=np.float64).ravel()
    counts = np.bincount(classes)
    sums = np.bincount(classes, weights=images, minlength=len(counts))
    present = [c for c in range(1, len(counts)) if counts[c]]
    if len(present) < 2:
        return None
    return min(present, key=lambda c: sums[c] / counts[c])


@dataclass(frozen=True)
class VolumeAugmenter(SliceAugmenter):
    """Callable ``(images, classes, rng) -> (images, classes)`` for 3-D training cubes.

    The changes of :class:`SliceAugmenter` that a network of volumes needs, in 3-D:
    left-right mirroring (along the first, RAS x, axis; with probability ``flip``, apart
    from ``probability``; the paired classes of ``mirror_classes`` swapped), gamma, a
    smooth multiplicative bias field, noise and, on request, enlarged ventricles
    (:func:`expand_class`). No rotation or scaling (``rotate_deg`` and ``scale`` are
    unused): resampling a 96^3 cube costs about as much as a training step.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = np.random.default_rng(1).random((2, 8, 8, 8, 1)).astype(np.float32)
    >>> classes = (images[..., 0] > 0.5).astype(np.uint8)
    >>> out, labels = VolumeAugmenter()(images, classes, rng)
    >>> out.shape, labels.shape, bool(np.all(out[images == 0] == 0))
    ((2, 8, 8, 8, 1), (2, 8, 8, 8), True)
    """

    rotate_deg: float = 0.0
    scale: float = 0.0

    def __call__(self, images: np.ndarray, classes: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment a batch: images ``(N, X, Y, Z, 1)`` float, classes ``(N, X, Y, Z)`` int."""
        images = np.array(images, dtype=np.float32, copy=True)
        classes = np.array(classes, copy=True)
        for i in range(len(images)):
            images[i, ..., 0], classes[i] = self.atrophied(images[i, ..., 0], classes[i], rng)
            if rng.random() < self.flip:
                images[i], classes[i] = images[i, ::-1].copy(), classes[i, ::-1].copy()
                if self.mirror_classes is not None:  # Left X becomes Right X
                    classes[i] = np.asarray(self.mirror_classes, classes.dtype)[classes[i]]
            if rng.random() < self.probability:
                images[i, ..., 0] = self.intensity(images[i, ..., 0], rng)
        return images, classes
