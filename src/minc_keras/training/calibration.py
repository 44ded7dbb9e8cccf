"""Per-class probability offsets, tuned on the validation scans once training ends.

The recipes' loss (``dice_wce``) weighs the cross-entropy of small classes up so that they
are learnt in the first minutes; the price is a network that over-segments them (on the dev
folds the ventricles came out too large, their false positives several times their false
negatives: ``benchmarks/README.md``, "Class offsets"). Multiplying each class's probability
by ``exp(b_c)`` and renormalising — a shift of the class priors, as for any classifier
trained on reweighted data — removes that bias. The offsets ``b`` (background fixed at 0)
are chosen to maximise the mean foreground Dice of the ensemble's labels on the validation
scans, by coordinate ascent over a grid, and are stored in the model's metadata so that
every prediction applies them.

A model trained with simulated atrophy (``--augment-atrophy``) is meant for older brains
too, whose ventricles are larger than the young validation subjects'; fitted on those alone,
the offsets shrink every ventricle as much as a young one needs (on the dev folds that cost
atrophied copies ventricle Dice; same section). Such models are fitted on each validation
scan and an atrophied copy of it (:data:`ATROPHY_VOXELS`) weighted equally.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minc_keras.inference.segmenter import load_segmenter
from minc_keras.models.info import update_info

log = logging.getLogger(__name__)

#: Offsets tried for each class (natural log of the probability factor).
OFFSET_GRID = np.round(np.arange(-3.0, 1.0001, 0.1), 1)

#: An offset is moved from 0 only for a gain in validation Dice larger than this.
MIN_GAIN = 1e-4

#: At most this many validation scans (evenly spread) are segmented to fit the offsets.
MAX_SCANS = 8

#: Ventricle growth (voxels) of the atrophied validation copies, in the middle of the
#: 1-6 voxels that ``--augment-atrophy`` trains with.
ATROPHY_VOXELS = 3.0


class _DiceCounter:
    """Mean foreground Dice of ``argmax(log p + b)`` for many offsets ``b``, computed fast.

    A voxel whose best class leads the runner-up by more than any two offsets can
    differ never changes label; those are counted once, and only the uncertain rest is
    looked at again. :meth:`sweep` scores every value of one class's offset in one pass.
    """

    def __init__(self, probabilities: np.ndarray, truth: np.ndarray, spread: float) -> None:
        num_classes = probabilities.shape[-1]
        logp = np.log(np.maximum(probabilities.reshape(-1, num_classes), 1e-12))
        truth = truth.reshape(-1)
        top2 = np.sort(logp, axis=-1)[:, -2:]
        uncertain = top2[:, 1] - top2[:, 0] <= spread
        fixed = np.argmax(logp[~uncertain], axis=-1)
        fixed_truth = truth[~uncertain]
        self.num_classes = num_classes
        #: per class: voxels both predicted and true, predicted, true (certain voxels only)
        self.fixed = np.array([[np.sum((fixed == c) & (fixed_truth == c)), np.sum(fixed == c),
                                np.sum(fixed_truth == c)] for c in range(num_classes)], float)
        self.logp = logp[uncertain]
        self.truth = truth[uncertain]

    def _mean(self, both: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Mean over foreground classes present (rows: classes) of Dice, per column."""
        total = predicted[1:] + true[1:]
        present = total > 0
        dice = np.where(present, 2 * both[1:] / np.maximum(total, 1), 0.0)
        count = present.sum(axis=0)
        return np.where(count > 0, dice.sum(axis=0) / np.maximum(count, 1), 1.0)

    def mean_dice(self, offsets: np.ndarray) -> float:
        """Mean Dice over the foreground classes present in truth or prediction."""
        labels = np.argmax(self.logp + offsets, axis=-1)
        counts = [[np.sum((labels == c) & (self.truth == c)), np.sum(labels == c),
                   np.sum(self.truth == c)] for c in range(self.num_classes)]
        both, predicted, true = (self.fixed + np.array(counts, float)).T
        return float(self._mean(both[:, None], predicted[:, None], true[:, None])[0])

    def sweep(self, offsets: np.ndarray, c: int, values: np.ndarray) -> np.ndarray:
        """:meth:`mean_dice` for ``offsets`` with ``offsets[c]`` set to each of ``values``.

        A voxel is labelled ``c`` when ``log p_c + value`` beats the best other class,
        that is when ``value`` exceeds its threshold ``t``; otherwise it keeps that other
        class. Counting thresholds below each value gives every column at once.
        """
        others = self.logp + offsets
        others[:, c] = -np.inf
        rival = np.argmax(others, axis=-1)
        threshold = np.take_along_axis(others, rival[:, None], axis=-1)[:, 0] - self.logp[:, c]

        def below(where) -> np.ndarray:  # per value: how many of these voxels it beats
            return np.searchsorted(np.sort(threshold[where]), values)

        both = np.tile(self.fixed[:, 0, None], (1, len(values)))
        predicted = np.tile(self.fixed[:, 1, None], (1, len(values)))
        true = np.tile(self.fixed[:, 2, None], (1, len(values)))
        for k in range(self.num_classes):
            true[k] += np.sum(self.truth == k)
            if k == c:
                predicted[k] += below(slice(None))
                both[k] += below(self.truth == c)
            else:  # voxels whose rival is k stay k where the value does not beat them
                mine = rival == k
                predicted[k] += mine.sum() - below(mine)
                hits = mine & (self.truth == k)
                both[k] += hits.sum() - below(hits)
        return self._mean(both, predicted, true)


def fit_offsets(scans: Iterable[tuple[np.ndarray, np.ndarray]], *,
                grid: np.ndarray = OFFSET_GRID, rounds: int = 3) -> tuple[np.ndarray, float, float]:
    """Per-class offsets that maximise the mean foreground Dice over several scans.

    Parameters
    ----------
    scans : iterable of (ndarray of shape (..., C), ndarray of int of shape (...))
        Predicted class probabilities of each validation scan and its true class indices
        (0 = background). Consumed one scan at a time; only each scan's uncertain voxels
        are kept.
    grid : ndarray
        Values tried for each offset; must contain 0.
    rounds : int
        Passes of coordinate ascent over the classes.

    Returns
    -------
    offsets : ndarray of shape (C,)
        ``offsets[0]`` is 0.
    before, after : float
        Mean foreground Dice (averaged over the scans) without and with the offsets.

    Examples
    --------
    A network that calls too much of class 1 is corrected:

    >>> truth = np.array([0] * 6 + [1] * 4)
    >>> p1 = np.array([0.1, 0.2, 0.55, 0.6, 0.1, 0.1, 0.9, 0.8, 0.7, 0.9])
    >>> probs = np.stack([1 - p1, p1], axis=-1)
    >>> offsets, before, after = fit_offsets([(probs, truth)])
    >>> float(offsets[1]) < 0, round(before, 3), round(after, 3)
    (True, 0.8, 1.0)
    """
    spread = float(np.max(grid) - np.min(grid))
    counters = [_DiceCounter(probs, truth, spread) for probs, truth in scans]
    if not counters:
        raise ValueError("fit_offsets needs at least one scan")
    num_classes = counters[0].logp.shape[-1]

    offsets = np.zeros(num_classes, np.float32)
    before = best = float(np.mean([counter.mean_dice(offsets) for counter in counters]))
    ordered = np.asarray(sorted(grid, key=abs), np.float32)  # ties: the smallest change wins
    for _ in range(rounds):
        moved = False
        for c in range(1, num_classes):
            scores = np.mean([counter.sweep(offsets, c, ordered) for counter in counters], axis=0)
            for value, trial_score in zip(ordered, scores, strict=True):
                if trial_score > best + MIN_GAIN:
                    offsets[c], best, moved = value, float(trial_score), True
        if not moved:
            break
    return offsets, before, best


@dataclass
class Calibration:
    """Offsets fitted on the validation scans, and what they did there."""

    class_names: list[str]
    offsets: list[float]
    scans: int
    dice_before: float
    dice_after: float
    atrophied: int = 0

    def line(self) -> str:
        """One line for the terminal.

        >>> calibration = Calibration(["bg", "CSF", "GM"], [0.0, -1.2, 0.0], 2, 0.91, 0.925)
        >>> print(calibration.line())  # doctest: +NORMALIZE_WHITESPACE
        calibrated on 2 validation scans: class offsets CSF -1.2, GM +0.0;
        validation Dice 0.910 -> 0.925
        >>> calibration.atrophied = 2
        >>> print(calibration.line())  # doctest: +NORMALIZE_WHITESPACE
        calibrated on 2 validation scans and 2 atrophied copies: class offsets CSF -1.2,
        GM +0.0; validation Dice 0.910 -> 0.925
        """
        shifts = ", ".join(f"{name} {value:+.1f}" for name, value
                           in zip(self.class_names[1:], self.offsets[1:], strict=True))
        scans = f"{self.scans} validation scan{'s' * (self.scans != 1)}"
        if self.atrophied:
            scans += f" and {self.atrophied} atrophied cop{'ies' if self.atrophied > 1 else 'y'}"
        return (f"calibrated on {scans}: class offsets {shifts}; "
                f"validation Dice {self.dice_before:.3f} -> {self.dice_after:.3f}")


def calibrate_model(path: Path, cache, *, batch_size: int = 8, max_scans: int = MAX_SCANS,
                    atrophy_voxels: float = 0.0) -> Calibration | None:
    """Fit the offsets of the saved model (or ensemble) at ``path`` and store them in it.

    Parameters
    ----------
    path : Path
        The model file (for an ensemble, the first view's, whose metadata lists the others).
    cache : SliceCache
        The prepared data; its validation scans are segmented with the whole ensemble.
    batch_size : int
        Slices per forward pass.
    max_scans : int
        Use at most this many validation scans, evenly spread.
    atrophy_voxels : float
        When above 0, fit on each validation scan and on a copy of it whose darkest class
        (the ventricles) is enlarged by this many voxels (``expand_class``), weighted
        equally, so that the offsets do not assume ventricles as small as the validation
        subjects'. Labels without a darker tissue class (a brain mask) get no copies.

    Returns
    -------
    Calibration or None
        None when there is nothing to calibrate: no validation scans, or a single sigmoid
        output.
    """
    from minc_keras.data.augment import darkest_class, expand_class

    validation = cache.by_category("validate")
    segmenter = load_segmenter(path, calibrated=False)  # fit the networks' own probabilities
    if not validation or segmenter.info.num_outputs < 2:
        log.info("no validation scans (or a single sigmoid output): predictions not calibrated")
        return None
    picked = [validation[int(i)] for i in
              np.unique(np.linspace(0, len(validation) - 1, min(max_scans, len(validation))
                                    ).round())]

    atrophied = []

    def scans():
        for index in picked:
            image = np.asarray(cache.image(index), dtype=np.float32)
            classes = cache.classes(np.asarray(cache.label(index)))
            yield segmenter.probabilities(image, batch_size=batch_size), classes
            target = darkest_class(image, classes) if atrophy_voxels > 0 else None
            if target is not None:
                image, classes = expand_class(image, classes, target, atrophy_voxels)
                atrophied.append(index)
                yield segmenter.probabilities(image, batch_size=batch_size), classes

    offsets, before, after = fit_offsets(scans())
    result = Calibration(list(segmenter.info.class_names),
                         [round(float(v), 2) for v in offsets], len(picked), before, after,
                         atrophied=len(atrophied))
    update_info(path, {"class_offsets": result.offsets,
                       "calibration": {"scans": result.scans, "dice_before": before,
                                       "dice_after": after, "atrophied_copies": len(atrophied),
                                       "atrophy_voxels": atrophy_voxels if atrophied else 0.0}})
    return result
