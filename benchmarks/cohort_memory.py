"""Peak memory of prepare, train and predict on a small and on a workshop-sized cohort.

The workshop had 261 subjects. This script makes cohorts of ``--small`` and ``--large``
subjects from the 15 OASIS dev scans (each new subject is a dev subject resampled
through a random affine: up to 6 degrees of rotation, 6 % of scaling and 3 mm of
shift, with its intensities scaled), then runs the product's own commands on each and
prints the peak resident memory (RSS) of each command: the kernel's count for its largest
process, and the sum over all its processes sampled every 0.2 s (the ratio uses the larger):

- ``minc-keras prepare`` (the whole cohort into the slice cache),
- ``minc-keras train --recipe fast --time-budget M`` (the same minutes for both sizes:
  memory must not grow with the cohort, whatever the duration),
- ``minc-keras predict`` over every scan of the cohort.

Usage::

    python benchmarks/cohort_memory.py --work /tmp/cohorts [--small 15] [--large 261]
        [--steps prepare,train,predict]

It needs psutil, which comes with the ``dask`` and ``test`` extras.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from _common import DATA
from scipy import ndimage
from scipy.spatial.transform import Rotation

from minc_keras.io import read_volume, write_volume

MEASURE = ("import resource, subprocess, sys; "
           "code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def peak_rss(command: list[str]) -> tuple[float, float, float]:
    """Run ``command`` in a fresh process: peak RSS in MB, as the kernel counts it for the
    largest single process and as sampled (every 0.2 s) for all its processes together,
    and its wall seconds."""
    start = time.perf_counter()
    wrapper = subprocess.Popen([sys.executable, "-c", MEASURE, *command],
                               stdout=subprocess.PIPE, text=True)
    tree_peak = 0
    while wrapper.poll() is None:
        try:  # the command and its children (predict segments a cohort in child processes)
            processes = psutil.Process(wrapper.pid).children(recursive=True)
            tree_peak = max(tree_peak, sum(p.memory_info().rss for p in processes))
        except psutil.Error:
            pass  # a process ended while we looked
        time.sleep(0.2)
    kilobytes, code = wrapper.stdout.read().strip().splitlines()[-1].split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {code}")
    return int(kilobytes) / 1024, tree_peak / 2**20, time.perf_counter() - start


def make_subject(image, label, dest: Path, name: str, rng: np.random.Generator) -> None:
    """Write ``image`` and ``label`` moved through one random affine as subject ``name``."""
    rotation = Rotation.from_rotvec(np.deg2rad(rng.uniform(-6, 6, 3))).as_matrix()
    matrix = rotation @ np.diag(rng.uniform(0.94, 1.06, 3))
    centre = (np.asarray(image.shape) - 1) / 2
    offset = centre - matrix @ centre + rng.uniform(-3, 3, 3)
    moved = ndimage.affine_transform(image.data.astype(np.float32), matrix, offset, order=1)
    labels = ndimage.affine_transform(label.data, matrix, offset, order=0)
    folder = dest / name
    write_volume(image.with_data(moved * np.float32(rng.uniform(0.8, 1.2))),
                 folder / f"{name}_T1w_anat.mnc", clobber=True)
    write_volume(label.with_data(labels), folder / f"{name}_variant-seg.mnc", clobber=True)


def make_cohort(source: Path, dest: Path, size: int) -> Path:
    """``size`` subjects made from the dev subjects under ``source`` (kept if made before)."""
    subjects = sorted(p.name for p in source.iterdir() if p.is_dir())
    rng = np.random.default_rng(size)
    done = 0
    for k in range(size):
        base = subjects[k % len(subjects)]
        name = f"sub-C{k:04d}"
        if (dest / name / f"{name}_variant-seg.mnc").exists():
            rng.random(10)  # keep the random stream of later subjects unchanged
            continue
        image = read_volume(source / base / f"{base}_T1w_anat.mnc")
        label = read_volume(source / base / f"{base}_variant-seg.mnc", label=True)
        make_subject(image, label, dest, name, rng)
        done += 1
    print(f"cohort of {size}: {done} subjects written to {dest}", flush=True)
    return dest


def measure(cohort: Path, work: Path, minutes: float,
            steps: list[str]) -> dict[str, tuple[float, float, float]]:
    """Peak RSS (largest process, all processes) and wall time of each step on one cohort."""
    target = work / f"run-{cohort.name}"
    if "prepare" in steps:
        shutil.rmtree(target, ignore_errors=True)  # measure a fresh cache, not a reused one
    tool = [sys.executable, "-m", "minc_keras"]
    results = {}
    if "prepare" in steps:
        results["prepare"] = peak_rss([*tool, "prepare", "--source", str(cohort), "--target",
                                       str(target), "--input-str", "T1w_anat", "--label-str",
                                       "variant-seg", "--ratios", "0.9", "0.1", "--quiet"])
    if "train" in steps:
        results["train"] = peak_rss([*tool, "train", "--target", str(target), "--recipe",
                                     "fast", "--time-budget", str(minutes), "--clobber",
                                     "--quiet"])
    if "predict" in steps:
        results["predict"] = peak_rss([*tool, "predict", "--model",
                                       str(target / "model" / "model.keras"), "-o",
                                       str(work / f"predict-{cohort.name}"), "--clobber",
                                       "--quiet", str(cohort / "*" / "*_T1w_anat.mnc")])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for cohorts and runs")
    parser.add_argument("--small", type=int, default=15)
    parser.add_argument("--large", type=int, default=261)
    parser.add_argument("--minutes", type=float, default=2.0, help="training time budget")
    parser.add_argument("--steps", default="prepare,train,predict",
                        help="steps to measure; predict alone reuses the trained models")
    args = parser.parse_args()
    steps = args.steps.split(",")
    source = DATA / "oasis-dev"
    if not source.is_dir():
        sys.exit(f"{source} not found: the OASIS dev data are needed (../shared/data)")
    table = {}
    for size in (args.small, args.large):
        cohort = make_cohort(source, args.work / f"cohort-{size}", size)
        table[size] = measure(cohort, args.work, args.minutes, steps)
        for step, (largest, together, seconds) in table[size].items():
            print(f"{size:4d} subjects  {step:8s} peak RSS {largest:7.0f} MB largest process, "
                  f"{together:7.0f} MB all processes  ({seconds / 60:.1f} min)", flush=True)
    # sampling can miss a short peak of the one process: take the larger of the two counts
    print("\npeak RSS, large / small cohort (all processes together):")
    for step in table[args.small]:
        small, large = (max(table[size][step][:2]) for size in (args.small, args.large))
        print(f"  {step:8s} {small:6.0f} MB -> {large:6.0f} MB  (x{large / small:.2f})")


if __name__ == "__main__":
    main()
