"""What the training labels decide about sampling: augmentation, and the rare class to repeat."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from minc_keras.data.augment import SliceAugmenter, VolumeAugmenter, darkest_class
from minc_keras.data.cache import SliceCache
from minc_keras.preprocessing.transforms import VOLUME_VIEW
from minc_keras.training.network import class_mirror
from minc_keras.training.options import TrainOptions

log = logging.getLogger(__name__)

#: Share of training slices whose darkest class ``augment_atrophy`` enlarges.
ATROPHY_PROBABILITY = 0.3

#: Every other voxel along each axis: enough of a scan to count its classes.
_SAMPLE = (slice(None, None, 2),) * 3


def augmenter(cache: SliceCache, options: TrainOptions, *, volume: bool = False
              ) -> SliceAugmenter | VolumeAugmenter | None:
    """The training slices' (or cubes') augmentation ``options`` ask for (``None``: none)."""
    if not (options.augment or options.augment_atrophy):
        return None
    kind = VolumeAugmenter if volume else SliceAugmenter
    plain = kind() if options.augment else kind(probability=0.0, flip=0.0)
    mirror = class_mirror(cache, options)
    if mirror is not None:  # a flip turns Left X into Right X
        plain = replace(plain, mirror_classes=mirror)
    rows = cache.by_category("train")[:4]  # a few scans tell which class is darkest
    if not (options.augment_atrophy and rows):
        return plain
    target = darkest_class(
        np.concatenate([np.asarray(cache.image(i)[_SAMPLE]).ravel() for i in rows]),
        np.concatenate([cache.classes(np.asarray(cache.label(i)[_SAMPLE])).ravel()
                        for i in rows]))
    if target is None:  # a brain mask, say; the recipes turn atrophy on for every task
        log.info("atrophy augmentation skipped: the labels have one class besides the "
                 "background, so there is no darker tissue class to enlarge")
        return plain
    log.info("atrophy augmentation: class %d (label %d, the darkest) enlarged in %d %% of "
             "the training %s", target, cache.class_values[target],
             round(100 * ATROPHY_PROBABILITY), "cubes" if volume else "slices")
    return replace(plain, atrophy=ATROPHY_PROBABILITY, atrophy_class=target)


def rare_class(cache: SliceCache, options: TrainOptions) -> int | None:
    """The class whose slices ``oversample_rare`` repeats (``None``: repeat none).

    A network of volumes always centres a share of its training cubes near this class.
    """
    rows = cache.by_category("train")
    volume = options.views == [VOLUME_VIEW]
    if not ((options.oversample_rare or volume) and rows):
        return None
    counts = sum(np.bincount(cache.classes(np.asarray(cache.label(i)[_SAMPLE])).ravel(),
                             minlength=cache.num_classes)
                 for i in rows)
    present = [c for c in range(1, cache.num_classes) if counts[c]]
    if len(present) < 2:  # a brain mask: the one class is not rare beside another
        log.info("no slices oversampled: the labels have one class besides the background")
        return None
    rare = min(present, key=lambda c: counts[c])
    what = ("a third of the training cubes centred near class %d" if volume
            else "slices holding class %d")
    log.info(what + " (label %d, %.1f %% of the labelled voxels)"
             + ("" if volume else " shown twice per epoch"),
             rare, cache.class_values[rare],
             100 * counts[rare] / sum(counts[c] for c in present))
    return rare
