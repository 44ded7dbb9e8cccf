"""Prototype: a 3-D U-Net at half resolution, trained on one fold of an ``accuracy.py`` run.

Kept as the record of the measurement that led to the product's ``--model-type unet3d``
(which builds the same network from its own layers): whether a 3-D network fits a CPU's
minutes better than the recipes' three 2-D views. The network folds each 2x2x2 block of
voxels into 8 channels, so its top level runs at half resolution, as the recipes' 2-D
U-Net does with 2x2 pixel blocks (``--input-stride 2``); four levels of 16, 32, 64 and
128 filters; 1.4 M parameters. It trains on random 96^3 patches (a third of them centred
near a ventricle voxel), two per step, mirrored left-right half the time and changed in
gamma, a smooth bias field and noise, with Dice + cross-entropy and a cosine learning rate
over a fixed time, on the training scans of the fold's prepared cache (the same split as
the 2-D run). A whole scan then goes through the network in one pass.

The held-out scans are scored with one pass, with a second pass shifted by one voxel
along every axis (the other block phase), with a left-right mirrored pass, and with all
four passes averaged; no class offsets.

Example (after ``accuracy.py --recipe default --folds 5 --work runs/default``)::

    python benchmarks/volume_unet.py --work runs/default --fold 1 --minutes 17
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from _common import DATA
from accuracy import CLASSES, LABEL_STRINGS, dice, folds_of
from keras import ops
from scipy import ndimage

from minc_keras.data.cache import CROP_MARGIN, SliceCache
from minc_keras.io import read_volume
from minc_keras.models import get_loss
from minc_keras.models.fused_batchnorm import FusedBatchNormalization
from minc_keras.preprocessing.transforms import (
    bounding_box,
    brain_mask,
    normalise_intensity,
    to_canonical,
)

#: The network's input sides must be multiples of this (a 2x2x2 fold, then 3 poolings).
MULTIPLE = 16


class Fold3D(keras.layers.Layer):
    """``(B, X, Y, Z, 1)`` channels-last to ``(B, 8, X/2, Y/2, Z/2)`` channels-first."""

    def call(self, x):
        shape = ops.shape(x)
        b, d, h, w = shape[0], shape[1] // 2, shape[2] // 2, shape[3] // 2
        x = ops.reshape(x, (b, d, 2, h, 2, w, 2))
        return ops.reshape(ops.transpose(x, (0, 2, 4, 6, 1, 3, 5)), (b, 8, d, h, w))

    def compute_output_shape(self, shape):
        return (shape[0], 8, *[None if v is None else v // 2 for v in shape[1:4]])


class Unfold3D(keras.layers.Layer):
    """``(B, 8K, X, Y, Z)`` channels-first to ``(B, 2X, 2Y, 2Z, K)`` channels-last."""

    def call(self, x):
        shape = ops.shape(x)
        b, k, d, h, w = shape[0], shape[1] // 8, shape[2], shape[3], shape[4]
        x = ops.reshape(x, (b, 2, 2, 2, k, d, h, w))
        return ops.reshape(ops.transpose(x, (0, 5, 1, 6, 2, 7, 3, 4)), (b, 2 * d, 2 * h, 2 * w, k))

    def compute_output_shape(self, shape):
        return (shape[0], *[None if v is None else 2 * v for v in shape[2:5]], shape[1] // 8)


def _block(x, filters: int, name: str):
    for i in (1, 2):
        x = keras.layers.Conv3D(filters, 3, padding="same", use_bias=False,
                                data_format="channels_first", name=f"{name}_conv{i}")(x)
        x = FusedBatchNormalization(axis=1, momentum=0.9, name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu")(x)
    return x


def build_volume_unet(num_classes: int, filters=(16, 32, 64, 128)) -> keras.Model:
    """The half-resolution 3-D U-Net described above, any input size (multiples of 16)."""
    inputs = keras.Input((None, None, None, 1))
    x = Fold3D()(inputs)
    skips = []
    for i, f in enumerate(filters[:-1]):
        x = _block(x, f, f"enc{i}")
        skips.append(x)
        x = keras.layers.MaxPooling3D(2, data_format="channels_first")(x)
    x = _block(x, filters[-1], "bottom")
    for i in reversed(range(len(filters) - 1)):
        x = keras.layers.Conv3DTranspose(filters[i], 2, strides=2, data_format="channels_first",
                                         name=f"up{i}")(x)
        x = keras.layers.Concatenate(axis=1)([x, skips[i]])
        x = _block(x, filters[i], f"dec{i}")
    x = Unfold3D()(keras.layers.Conv3D(8 * num_classes, 1, data_format="channels_first")(x))
    return keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(x))


class PatchSampler:
    """Random augmented training patches from the scans of a prepared cache."""

    def __init__(self, cache: SliceCache, size: int, near_ventricles: float, seed: int) -> None:
        rows = cache.by_category("train")
        self.images = [np.asarray(cache.image(i), np.float32) for i in rows]
        self.classes = [cache.classes(np.asarray(cache.label(i))) for i in rows]
        self.images = [np.pad(v, [(0, max(0, size - n)) for n in v.shape]) for v in self.images]
        self.classes = [np.pad(v, [(0, max(0, size - n)) for n in v.shape]) for v in self.classes]
        self.ventricles = [np.argwhere(c == 1) for c in self.classes]
        self.size, self.near, self.eye = size, near_ventricles, np.eye(cache.num_classes,
                                                                       dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def patch(self) -> tuple[np.ndarray, np.ndarray]:
        """One ``(P, P, P, 1)`` image patch and its ``(P, P, P, C)`` one-hot classes."""
        rng, p = self.rng, self.size
        i = int(rng.integers(len(self.images)))
        image, classes = self.images[i], self.classes[i]
        if rng.random() < self.near and len(self.ventricles[i]):
            centre = self.ventricles[i][rng.integers(len(self.ventricles[i]))]
            start = [int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4), 0, n - p))
                     for c, n in zip(centre, image.shape, strict=True)]
        else:
            start = [int(rng.integers(0, n - p + 1)) for n in image.shape]
        box = tuple(slice(s, s + p) for s in start)
        x, y = image[box], classes[box]
        if rng.random() < 0.5:  # left-right (RAS x)
            x, y = x[::-1], y[::-1]
        head = x > 0
        x = np.clip(x, 0, None) ** np.exp(rng.normal(0, 0.15))
        x = x * np.exp(ndimage.zoom(rng.normal(0, 0.08, (3, 3, 3)), p / 3, order=1)[:p, :p, :p])
        x = np.where(head, x + rng.normal(0, 0.02, x.shape), 0)
        return np.ascontiguousarray(x[..., None], np.float32), self.eye[y]


def train(model: keras.Model, sampler: PatchSampler, *, minutes: float, batch: int,
          lr: float) -> int:
    """Train for ``minutes`` (cosine learning rate after a 50-step warm-up); return steps."""
    optimizer = keras.optimizers.Adam(lr)
    model.compile(optimizer, get_loss("dice_ce"))
    budget, start, step, losses = minutes * 60, time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - start) < budget:
        optimizer.learning_rate.assign(
            lr * min(1.0, step / 50) * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        images, targets = zip(*[sampler.patch() for _ in range(batch)], strict=True)
        losses.append(float(model.train_on_batch(np.stack(images), np.stack(targets))))
        step += 1
        if step % 100 == 0:
            print(f"step {step}, {elapsed / 60:.1f} min, loss {np.mean(losses[-100:]):.4f}",
                  flush=True)
    return step


def probabilities(model: keras.Model, volume: np.ndarray, shift: int = 0,
                  mirrored: bool = False) -> np.ndarray:
    """One pass over a whole normalised volume, placed ``shift`` voxels into the padding."""
    x = volume[::-1] if mirrored else volume
    padding = [(shift, -(n + shift) % MULTIPLE) for n in x.shape]
    out = np.asarray(model.predict_on_batch(np.pad(x, padding)[None, ..., None]))[0]
    out = out[tuple(slice(shift, shift + n) for n in x.shape)]
    return out[::-1] if mirrored else out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="an accuracy.py work folder (its fold's prepared cache is used)")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5, help="as given to accuracy.py")
    parser.add_argument("--labels", choices=LABEL_STRINGS, default="manual")
    parser.add_argument("--minutes", type=float, default=17.0)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--near-ventricles", type=float, default=0.33,
                        help="share of patches centred near a ventricle (class 1) voxel")
    args = parser.parse_args()

    fold_dir = args.work / f"{args.labels}_fold{args.fold}"
    cache = SliceCache.open(fold_dir / "run" / "data")
    keras.utils.set_random_seed(0)
    model = build_volume_unet(cache.num_classes)
    print(f"{model.count_params():,} parameters; training on "
          f"{len(cache.by_category('train'))} scans for {args.minutes} min", flush=True)
    start = time.perf_counter()
    steps = train(model, PatchSampler(cache, args.patch, args.near_ventricles, seed=0),
                  minutes=args.minutes, batch=args.batch_size, lr=args.lr)
    print(f"{steps} steps ({steps * args.batch_size} patches) in "
          f"{(time.perf_counter() - start) / 60:.1f} min", flush=True)

    source = DATA / "oasis-dev"
    subjects = sorted(p.name for p in source.iterdir() if p.is_dir())
    passes = {"one pass": [(0, False)], "shifted": [(0, False), (1, False)],
              "mirrored": [(0, False), (0, True)],
              "shifted + mirrored": [(0, False), (1, False), (0, True), (1, True)]}
    rows = []
    for subject in folds_of(subjects, args.folds, 0)[args.fold - 1]:
        scan = read_volume(source / subject / f"{subject}_T1w_anat.mnc")
        truth = read_volume(source / subject / f"{subject}_{LABEL_STRINGS[args.labels]}.mnc",
                            label=True)
        data, _ = to_canonical(scan.data.astype(np.float32), scan.affine)
        reference, _ = to_canonical(truth.data, truth.affine)
        mask = brain_mask(data)
        box = bounding_box(mask, CROP_MARGIN)
        volume, _ = normalise_intensity(data[box], mask[box])
        tic = time.perf_counter()
        computed = {(0, False): probabilities(model, volume)}
        seconds = time.perf_counter() - tic
        for name, settings in passes.items():
            total = sum(computed[s] if s in computed else
                        computed.setdefault(s, probabilities(model, volume, *s))
                        for s in settings)
            labels = np.zeros(data.shape, np.int64)
            labels[box] = np.argmax(total, axis=-1)
            rows += [{"subject": subject, "passes": name, "class": cname,
                      "dice": dice(labels == value, reference == value)}
                     for value, cname in CLASSES.items()]
        print(f"{subject}: {seconds:.1f} s per pass", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(fold_dir.parent / f"volume_unet_fold{args.fold}.csv", index=False)
    print(table.pivot_table(index="passes", columns="class", values="dice").round(4).to_string())


if __name__ == "__main__":
    main()
