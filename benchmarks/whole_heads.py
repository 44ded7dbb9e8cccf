"""Whole heads against skull-stripped brains: what the plausibility check of ``predict`` sees.

For every skull-stripped dev scan (OASIS, ``oasis-dev-nifti``) and every whole head
(``mass-heads``): the volume of its non-zero voxels, the measure a model records of its
training scans and checks new scans against
(:mod:`minc_keras.preprocessing.plausibility`), and the ratio to the largest dev brain.
With ``--model`` (a model trained on the dev scans) each head is also given to
``minc-keras predict``, which must refuse it; and each head's expert-stripped brain
(the scan times its mask), which must pass.

    python benchmarks/whole_heads.py [--model T/model/model.keras]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA

from minc_keras.io import Volume, read_volume, write_volume
from minc_keras.preprocessing.plausibility import MAX_FOREGROUND_RATIO, foreground_ml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model trained on the dev scans")
    args = parser.parse_args()
    brains = sorted(DATA.glob("oasis-dev-nifti/*/*_T1w_anat.nii.gz"))
    heads = sorted(DATA.glob("mass-heads/*/*_T1w.nii.gz"))
    if not brains or not heads:
        print(f"no dev data under {DATA}")
        return 1
    seconds, volumes = [], {}
    for path in brains + heads:
        scan = read_volume(path)
        start = time.perf_counter()
        volumes[path] = foreground_ml(scan.data, scan.affine)
        seconds.append(time.perf_counter() - start)
    largest = max(volumes[p] for p in brains)
    print(f"{'scan':<34} {'non-zero mL':>11} {'x largest brain':>15}")
    for path in brains + heads:
        print(f"{path.name[:34]:<34} {volumes[path]:>11,.0f} {volumes[path] / largest:>15.2f}")
    for head in heads:  # the same heads, stripped by their expert masks
        mask = read_volume(head.with_name(head.name.replace("_T1w", "_desc-brain_mask")),
                           label=True)
        brain = float((mask.data > 0).sum() * mask.voxel_volume_ml)
        print(f"{head.name[:22] + ' (stripped)':<34} {brain:>11,.0f} {brain / largest:>15.2f}")
    print(f"refused above {MAX_FOREGROUND_RATIO} x the largest training scan; "
          f"measure takes {statistics.median(seconds):.2f} s per scan (median)")
    if args.model:
        _predict(args.model, heads)
    return 0


def _predict(model: Path, heads: list[Path]) -> None:
    """Give each head, and its expert-stripped brain, to ``predict``; print the outcome."""
    from minc_keras.cli.main import main as cli

    work = Path(tempfile.mkdtemp(prefix="whole-heads-"))
    for head in heads:
        mask = head.with_name(head.name.replace("_T1w", "_desc-brain_mask"))
        scan = read_volume(head)
        stripped = work / "stripped" / head.name.replace("_T1w", "_desc-stripped_T1w")
        write_volume(Volume(np.where(read_volume(mask, label=True).data > 0, scan.data, 0)
                            .astype(np.float32), scan.affine), stripped)
        for path in (head, stripped):
            code = cli(["predict", "--model", str(model), "-o", str(work / "out"), str(path),
                        "--quiet", "--clobber"])
            print(f"predict {path.name}: exit status {code}")


if __name__ == "__main__":
    sys.exit(main())
