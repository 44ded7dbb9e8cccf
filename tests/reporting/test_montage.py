"""The montage PNG shows what it says: input | reference | prediction, each panel its own."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minc_keras.reporting.figures import save_montage

ROWS = 3
NAMES = ["background", "shell", "core"]


def _subject() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ellipsoid head: its image, its labels, and a prediction with the core shifted."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in (40, 48, 30)), indexing="ij"))
    r = np.sqrt(((grid / np.array([0.8, 0.85, 0.75])[:, None, None, None]) ** 2).sum(0))
    reference = np.where(r < 1.0, 1, 0) + (r < 0.55)
    image = np.choose(reference, [0.0, 60.0, 100.0]).astype(np.float32)
    prediction = np.where(r < 1.0, 1, 0)
    prediction[np.roll(reference == 2, 10, axis=0)] = 2  # the core predicted to one side
    return image, reference.astype(np.uint8), prediction.astype(np.uint8)


def _runs(profile: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """The [start, stop) runs where ``profile`` is above ``threshold``."""
    above = np.concatenate([[False], profile > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(int)))
    return list(zip(edges[::2], edges[1::2], strict=True))


def _panels(path) -> list[list[np.ndarray]]:
    """The PNG's panels, rows of [input, reference, prediction], as RGB arrays.

    The panels are the dark squares of the figure (the background outside the head is
    black); between them is white paper with a little text.
    """
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    ink = (pixels < 200).any(axis=-1)
    columns = [c for c in _runs(ink.mean(axis=0), 0.4) if c[1] - c[0] > 20]
    rows = [r for r in _runs(ink.mean(axis=1), 0.4) if r[1] - r[0] > 20]
    assert (len(rows), len(columns)) == (ROWS, 3), (rows, columns)
    width = min(c1 - c0 for c0, c1 in columns) - 4  # panels may differ by a pixel's rounding
    return [[pixels[r0 + 2:r1 - 2, c0 + 2:c0 + 2 + width] for c0, _ in columns]
            for r0, r1 in rows]


def _coloured(panel: np.ndarray) -> np.ndarray:
    """Where a label colour tints the grey picture."""
    return (panel.max(axis=-1) - panel.min(axis=-1)) > 30


@pytest.fixture(scope="module")
def subject():
    return _subject()


def test_montage_panels_show_input_reference_and_prediction(subject, tmp_path):
    image, reference, prediction = subject
    path = save_montage(image, reference, prediction, tmp_path / "m.png", num_classes=3,
                        class_names=NAMES, rows=ROWS)
    for input_panel, reference_panel, prediction_panel in _panels(path):
        assert not _coloured(input_panel).any()  # the input: grey levels only
        assert _coloured(reference_panel).mean() > 0.2  # the labels, in colour
        assert _coloured(prediction_panel).mean() > 0.2
        assert (input_panel > 40).any()  # the head, not a black square
        # the same picture under each overlay, the overlays not the same
        assert np.abs(reference_panel - prediction_panel).max(axis=-1).mean() > 3
        assert np.abs(input_panel - reference_panel).max(axis=-1).mean() > 10


def test_a_prediction_equal_to_the_reference_looks_the_same(subject, tmp_path):
    image, reference, _ = subject
    path = save_montage(image, reference, reference.copy(), tmp_path / "m.png", num_classes=3,
                        class_names=NAMES, rows=ROWS)
    for _, reference_panel, prediction_panel in _panels(path):
        assert np.abs(reference_panel - prediction_panel).max(axis=-1).mean() < 1
