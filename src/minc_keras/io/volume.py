"""The one in-memory type for a brain volume: an array and its voxel-to-world affine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Volume:
    """A 3-D image with its geometry.

    Parameters
    ----------
    data : ndarray of shape (I, J, K)
        Voxel values, axes in the order they are stored in the file.
    affine : ndarray of shape (4, 4)
        Maps voxel indices ``(i, j, k, 1)`` to world millimetres ``(x, y, z, 1)``.
        World space is the scanner/MINC convention: x grows to the subject's right,
        y to anterior, z to superior (RAS+), for MINC and NIfTI alike.
    source : Path, optional
        The file the volume was read from, for messages and provenance.
    """

    data: np.ndarray
    affine: np.ndarray
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must have shape (4, 4), got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the voxel array."""
        return tuple(self.data.shape)

    @property
    def voxel_sizes(self) -> np.ndarray:
        """Voxel edge lengths in mm along each array axis, shape (3,)."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def with_data(self, data: np.ndarray) -> Volume:
        """Return a volume on the same grid holding ``data``."""
        if tuple(data.shape[:3]) != self.shape[:3]:
            raise ValueError(f"data shape {data.shape} does not match grid {self.shape}")
        return Volume(data, self.affine.copy(), self.source)
