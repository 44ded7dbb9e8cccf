"""Benchmark the workshop pipeline on the real dev data (../shared/data/oasis-dev).

Measures, in one run on this machine:

- preprocessing: volumes per second building the cache (read MINC2, reorient,
  normalise, crop, write), median of repeated builds;
- training: slices per second of ``fit`` for a model, and the FLOP/s that achieves as a
  fraction of this machine's fp32 matmul rate measured in the same process;
- waiting for batches: the share of a training step spent in the input pipeline;
- peak RSS of the process.

Usage::

    python benchmarks/pipeline_speed.py [--model-type model_0_0] [--batch-size 16] [--steps 60]
        [--nK 16,32,64,128] [--input-stride 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, conv_flops_per_slice, matmul_gflops, peak_rss_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="model_0_0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="training steps to time")
    parser.add_argument("--nK", type=lambda t: [int(k) for k in t.split(",")], default=None,
                        help="filters, as for minc-keras (unet: base or per level)")
    parser.add_argument("--input-stride", type=int, default=1, help="unet: as for minc-keras")
    parser.add_argument("--refine-filters", type=int, default=0,
                        help="unet: as for minc-keras")
    parser.add_argument("--repeats", type=int, default=3, help="cache builds to time")
    args = parser.parse_args()
    source = DATA / "oasis-dev"
    if not source.is_dir():
        print(f"no dev data at {source}; nothing to benchmark")
        return 0

    import keras

    from minc_keras.data.cache import SliceCache
    from minc_keras.data.dataset import SliceDataset
    from minc_keras.model_info import core_model
    from minc_keras.prepare import prepare
    from minc_keras.train import TrainOptions, build_network

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
                               refine_filters=args.refine_filters)
        model, info = build_network(cache, options)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
        data = SliceDataset(cache, "train", batch_size=args.batch_size, shuffle=True,
                            num_outputs=info["num_outputs"], multiple=info["multiple"])
        height, width = data.size
        load_times, step_times = [], []
        for step in range(args.steps + 3):
            start = time.perf_counter()
            x, y = data[step % len(data)]
            loaded = time.perf_counter()
            model.train_on_batch(x, y)
            done = time.perf_counter()
            if step >= 3:  # warm-up
                load_times.append(loaded - start)
                step_times.append(done - start)
        step = statistics.median(step_times)
        slices_per_s = args.batch_size / step
        flops = 3 * conv_flops_per_slice(core_model(model), height, width)
        achieved = flops * slices_per_s / 1e9
        peak = matmul_gflops()
        print(f"training {args.model_type} ({model.count_params():,} parameters): "
              f"{slices_per_s:.1f} slices/s of {height}x{width} "
              f"(batch {args.batch_size}, median step {step * 1000:.0f} ms)")
        print(f"  achieved {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of the fp32 matmul rate "
              f"measured now ({peak:.1f} GFLOP/s); {flops / 3 / 1e9:.2f} GFLOP forward per slice")
        print(f"  input pipeline: {statistics.median(load_times) * 1000:.1f} ms per batch = "
              f"{statistics.median(load_times) / step:.1%} of a step")
        print(f"peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
