"""Benchmark the workshop pipeline on the real dev data (../shared/data/oasis-dev).

Measures, in one run on this machine:

- preprocessing: volumes per second building the cache (read MINC2, reorient,
  normalise, crop, write), median of repeated builds;
- training: slices per second of ``fit`` for a model, and the FLOP/s that achieves as a
  fraction of this machine's fp32 matmul rate measured in the same process (the faster
  of the Keras backend's and numpy's BLAS, ``_common.matmul_gflops``): the steps run
  in ``--rounds`` rounds, each followed by a measurement of the matmul rate (which moved
  by up to a fifth within minutes on the development machine), and the median of the
  rounds' ratios is reported with their range;
- waiting for batches: the share of a training step spent in the input pipeline (with
  ``--augment``, the recipes' augmentation and simulated atrophy included, as in training);
- peak RSS of the process.

``--model-type unet3d`` trains on the random 96^3 cubes of ``train`` (``--batch-size``
cubes per step) and counts the FLOPs of a cube.

Usage::

    python benchmarks/pipeline_speed.py [--model-type model_0_0] [--batch-size 16] [--steps 60]
        [--nK 16,32,64,128] [--input-stride 2] [--augment] [--jit-compile] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# isort: off
from _common import DATA, conv_flops_per_slice, matmul_gflops, peak_rss_mb
import keras  # after _common, which imports minc_keras: that picks Keras' backend
# isort: on


class _StepClock(keras.callbacks.Callback):
    """Times each step of ``fit``, with the wait for its batch (the input pipeline) before it."""

    def __init__(self) -> None:
        super().__init__()
        self.load_times: list[float] = []
        self.step_times: list[float] = []
        self.last = self.begin = 0.0

    def on_train_begin(self, logs=None):
        self.last = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = time.perf_counter()
        self.load_times.append(self.begin - self.last)

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()
        self.step_times.append(self.last - self.begin + self.load_times[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="model_0_0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="training steps to time")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds the steps are split into, each followed by a "
                             "measurement of the matmul rate")
    parser.add_argument("--nK", type=lambda t: [int(k) for k in t.split(",")], default=None,
                        help="filters, as for minc-keras (unet: base or per level)")
    parser.add_argument("--input-stride", type=int, default=1, help="unet: as for minc-keras")
    parser.add_argument("--refine-filters", type=int, default=0,
                        help="unet: as for minc-keras")
    parser.add_argument("--repeats", type=int, default=3, help="cache builds to time")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the training step first, as train --jit-compile does")
    parser.add_argument("--augment", action="store_true",
                        help="augment the training batches as the recipes do")
    args = parser.parse_args()
    source = DATA / "oasis-dev"
    if not source.is_dir():
        print(f"no dev data at {source}; nothing to benchmark")
        return 0

    from minc_keras.data.cache import SliceCache
    from minc_keras.data.dataset import SliceDataset
    from minc_keras.data.patches import PATCH_SIZE, PatchDataset
    from minc_keras.data.prepare import prepare
    from minc_keras.models.info import core_model
    from minc_keras.models.zoo import spatial_dims
    from minc_keras.preprocessing.transforms import VOLUME_VIEW
    from minc_keras.training.compilation import compile_train_step
    from minc_keras.training.network import build_network
    from minc_keras.training.options import TrainOptions
    from minc_keras.training.sampling import augmenter as _augmenter
    from minc_keras.training.sampling import rare_class as _rare_class

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "run"
        build_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            prepare(source, target, input_str="T1w_anat", label_str="variant-seg",
                    ratios=(0.7, 0.15), clobber=True, quiet=True)
            build_times.append(time.perf_counter() - start)
        cache = SliceCache.open(target / "data")
        n = len(cache.scans)
        build = statistics.median(build_times)
        print(f"preprocessing: {n} volumes in {build:.1f} s (median of {args.repeats}) = "
              f"{n / build:.2f} volumes/s")

        options = TrainOptions(model_type=args.model_type, batch_size=args.batch_size,
                               nK=args.nK, input_stride=args.input_stride,
                               refine_filters=args.refine_filters,
                               augment=args.augment, augment_atrophy=args.augment)
        volume = spatial_dims(args.model_type) == 3
        model, info = build_network(cache, options, VOLUME_VIEW if volume else "axial")
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
        common = {"batch_size": args.batch_size, "num_outputs": info.num_outputs,
                  "multiple": info.multiple,
                  "augment": _augmenter(cache, options, volume=volume)}
        if volume:
            data = PatchDataset(cache, "train", rare_class=_rare_class(cache, options), **common)
            size, unit = (PATCH_SIZE,) * 3, "cubes"
        else:
            # full batches only, as train does (a smaller last batch compiles once more)
            data = SliceDataset(cache, "train", shuffle=True, drop_remainder=True, **common)
            size, unit = data.size, "slices"
        compiling = compile_train_step(model, data)[0] if args.jit_compile else None
        rounds = max(args.rounds, 1)
        per_round = max(args.steps // rounds, 1)
        flops = 3 * conv_flops_per_slice(core_model(model), *size)
        clocks, rates = [], []
        for _ in range(rounds):
            clocks.append(_StepClock())
            model.fit(data, epochs=1, steps_per_epoch=min(per_round + 2, len(data)),
                      callbacks=[clocks[-1]], shuffle=False, verbose=0)
            rates.append(matmul_gflops())  # right after the round: the rate moves
        first = clocks[0].step_times[0]
        # 2 steps of each round to warm up (the first starts the loader)
        kept = [clock.step_times[2:] for clock in clocks]
        step_times = [t for times in kept for t in times]
        load_times = [t for clock in clocks for t in clock.load_times[2:]]
        ratios = [flops * args.batch_size / statistics.median(times) / 1e9 / rate
                  for times, rate in zip(kept, rates, strict=True)]
        step = statistics.median(step_times)
        per_s = args.batch_size / step
        achieved = flops * per_s / 1e9
        print(f"training {args.model_type} ({model.count_params():,} parameters): "
              f"{per_s:.1f} {unit}/s of {'x'.join(map(str, size))} "
              f"(batch {args.batch_size}, median step {step * 1000:.0f} ms; first step "
              f"{first:.1f} s" + (f"; compiled first in {compiling:.0f} s" if compiling else "")
              + ")")
        print(f"  achieved {achieved:.1f} GFLOP/s = {statistics.median(ratios):.0%} of the fp32 "
              f"matmul rate (median of {rounds} rounds, each against the rate measured after "
              f"it: {min(ratios):.0%} to {max(ratios):.0%}; rates {min(rates):.0f} to "
              f"{max(rates):.0f} GFLOP/s); {flops / 3 / 1e9:.2f} GFLOP forward per "
              f"{unit[:-1]}")
        # the mean, not the median: simulated atrophy makes one batch in a few slow
        load = statistics.mean(load_times)
        print(f"  input pipeline{' with augmentation' * args.augment}: {load * 1000:.1f} ms "
              f"per batch on average = {sum(load_times) / sum(step_times):.1%} of the "
              "training time")
        print(f"peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
