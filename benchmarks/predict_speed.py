"""Seconds per 1 mm T1 scan for ``minc-keras predict``, reading and writing included.

Builds untrained networks of the requested types for the dev data's grid (speed does not
depend on the weights), then segments real OASIS scans with one view and with the
three-view ensemble, timing every scan from reading the file to writing its outputs.
Prints medians.

Usage::

    python benchmarks/predict_speed.py [--model-types model_0_0 unet] [--scans 5]
    python benchmarks/predict_speed.py --recipe default   # the recipe's network
    python benchmarks/predict_speed.py --recipe default --shift-passes 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, peak_rss_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-types", nargs="+", default=["model_0_0", "unet"])
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--shift-passes", type=int, default=None,
                        help="passes per slice instead of the network's own (1 for a "
                        "half-resolution network's single pass)")
    parser.add_argument("--recipe", default=None,
                        help="time the network of this recipe (its model type, nK, input "
                        "stride, refinement head, precision)")
    args = parser.parse_args()
    source = DATA / "oasis-dev"
    if not source.is_dir():
        print(f"no dev data at {source}; nothing to benchmark")
        return 0

    from minc_keras.data.prepare import prepare
    from minc_keras.inference.segmenter import load_segmenter
    from minc_keras.predict.inputs import collect_inputs
    from minc_keras.predict.outputs import segment_file
    from minc_keras.training import TrainOptions, train

    scans = collect_inputs([str(source)])
    scans = [s for s in scans if "T1w" in s.name][: args.scans]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "run"
        prepare(source, target, input_str="T1w_anat", label_str="variant-seg", quiet=True)
        network = {}
        if args.recipe:
            recipe = TrainOptions.from_recipe(args.recipe).config()
            network = {k: recipe[k] for k in ("nK", "input_stride", "refine_filters", "pad",
                                              "precision")
                       if k in recipe}
            args.model_types = [recipe["model_type"]]
        for model_type in args.model_types:
            for views in (["axial"], ["axial", "coronal", "sagittal"]):
                name = f"{model_type}_{len(views)}v.keras"
                train(target, TrainOptions(model_type=model_type, views=views, **network),
                      model_name=name, make_model_only=True, clobber=True, quiet=True)
                start = time.perf_counter()
                segmenter = load_segmenter(target / "model" / name, tta=args.tta,
                                           shift_passes=args.shift_passes)
                load = time.perf_counter() - start
                times = []
                for scan in scans:
                    start = time.perf_counter()
                    segment_file(segmenter, scan, Path(tmp) / "out", model_path=Path(name),
                                 clobber=True)
                    times.append(time.perf_counter() - start)
                label = (f"{args.recipe or model_type:>10} {len(views)} view(s), "
                         f"{segmenter.shift_passes[0]} pass(es)")
                print(f"{label}{' + TTA' if args.tta else ''}: "
                      f"median {statistics.median(times):.2f} s per scan "
                      f"(min {min(times):.2f}, max {max(times):.2f}, {len(times)} scans; "
                      f"model load {load:.1f} s once)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
