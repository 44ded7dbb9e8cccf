"""Random changes to training slices that keep their labels true.

The development subjects are young adults scanned on one scanner; the people users
segment are not. :class:`SliceAugmenter` perturbs each training slice the way scans
differ in practice: mirror image, head pose and size (rotation, scaling), contrast
(gamma), receive-coil shading (a smooth multiplicative bias field) and noise. The
geometric changes move the labels with the image (nearest neighbour); the intensity
changes touch the image only.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def __call__(self, images: np.ndarray, classes: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment a batch: images ``(N, H, W, 1)`` float, classes ``(N, H, W)`` int."""
        images = np.array(images, dtype=np.float32, copy=True)
        classes = np.array(classes, copy=True)
        for i in range(len(images)):
            if rng.random() >= self.probability:
                continue
            images[i, ..., 0], classes[i] = self.geometry(images[i, ..., 0], classes[i], rng)
            images[i, ..., 0] = self.intensity(images[i, ..., 0], rng)
        return images, classes

    def geometry(self, image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mirror, rotate and zoom one slice about its centre; labels by nearest neighbour."""
        if rng.random() < self.flip:
            image, labels = image[:, ::-1], labels[:, ::-1]
        angle = np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(1 - self.scale, 1 + self.scale)
        if angle == 0 and zoom == 1:
            return image, labels
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        matrix = np.array([[cos, -sin], [sin, cos]])
        centre = (np.asarray(image.shape) - 1) / 2
        offset = centre - matrix @ centre
        image = ndimage.affine_transform(image, matrix, offset, order=1, mode="constant")
        labels = ndimage.affine_transform(labels, matrix, offset, order=0, mode="constant")
        return image, labels

    def intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gamma, a smooth bias field and noise, inside the head only (background stays 0)."""
        head = image > 0
        if not head.any():
            return image
        out = np.clip(image, 0, None) ** np.exp(rng.uniform(-self.gamma, self.gamma))
        if self.bias:
            out *= self._bias_field(image.shape, rng)
        if self.noise:
            out += rng.normal(0, rng.uniform(0, self.noise), image.shape)
        return np.where(head, out, 0).astype(np.float32)

    def _bias_field(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """``exp`` of a random bilinear-plus-quadratic surface with peak ``+-bias``."""
        y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]),
                           indexing="ij")
        terms = np.stack([x, y, x * y, x**2 - 0.5, y**2 - 0.5])
        surface = np.tensordot(rng.uniform(-1, 1, len(terms)), terms, axes=1)
        surface *= np.log1p(self.bias) / max(np.abs(surface).max(), 1e-6)
        return np.exp(surface)
