"""What limits a cross-validated recipe: its views, its class offsets, where its errors lie.

Reads the work folder of a finished ``accuracy.py`` run against the manual labels and, for
every held-out scan of every fold kept there:

* scores each view's network alone and the views averaged, each with the class offsets
  fitted by ``--calibrate``, with the ventricle offset alone, and with none (``views``);
* breaks the ventricle errors of the run's own predictions down by their distance to the
  manual boundary, and the error rate on the boundary by the axis the surface faces
  (``errors``);
* finds the large pieces (``--piece`` voxels or more) of extra and missed ventricle, what
  the rater labelled there, and the Dice they cost (``pieces``): a piece of that size is
  not a boundary error but a place where network and rater disagree on what is ventricle;
* measures how much the manual ventricles change when each label is replaced by the
  majority of it and its two neighbours along one axis (``tracing``): a rater who traced
  on slices of one orientation varies most from one such slice to the next.

``--atrophied`` looks at the run's atrophied copies of the held-out scans instead
(``accuracy.py --atrophied``).

Examples::

    python benchmarks/accuracy.py --recipe default --folds 5 --atrophied 4 --work runs/default
    python benchmarks/fold_analysis.py --work runs/default
    python benchmarks/fold_analysis.py --work runs/default --atrophied
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA
from accuracy import CLASSES, dice, folds_of
from scipy import ndimage

from minc_keras.inference.offsets import apply_offsets
from minc_keras.inference.segment import segment_volume
from minc_keras.inference.segmenter import Segmenter, load_segmenter
from minc_keras.io import Volume, read_volume

VENTRICLES = 1  # the manual labels' CSF class: ventricles only


def view_rows(model: Path, volume: Volume, truth: np.ndarray) -> list[dict]:
    """Dice per class of each view alone and of all views averaged, under three offsets."""
    ensemble = load_segmenter(model, calibrated=False)
    fitted = ensemble.info.class_offsets or [0.0] * (len(CLASSES) + 1)
    ventricle_only = [value if c == VENTRICLES else 0.0 for c, value in enumerate(fitted)]
    per_view = [segment_volume(Segmenter([member], calibrated=False), volume).probabilities
                for member in ensemble.members]
    combos = dict(zip(ensemble.views, per_view, strict=True))
    combos["all views"] = sum(per_view) / len(per_view)
    rows = []
    for combo, probabilities in combos.items():
        for offsets_name, offsets in (("fitted", fitted), ("ventricle only", ventricle_only),
                                      ("none", None)):
            labels = np.argmax(apply_offsets(probabilities, offsets), axis=-1)
            rows += [{"views": combo, "offsets": offsets_name, "class": name,
                      "dice": dice(labels == value, truth == value)}
                     for value, name in CLASSES.items()]
    return rows


def error_row(predicted: np.ndarray, truth: np.ndarray, image: np.ndarray) -> dict:
    """Where the ventricle errors of one prediction lie, relative to the manual boundary."""
    extra, missed = predicted & ~truth, truth & ~predicted
    outside = ndimage.distance_transform_edt(~truth)  # to the nearest ventricle voxel
    inside = ndimage.distance_transform_edt(truth)  # to the nearest voxel outside
    smooth = ndimage.gaussian_filter(truth.astype(np.float32), 1.0)
    shell = (smooth > 0.02) & (smooth < 0.98)
    facing = np.argmax(np.abs(np.stack(np.gradient(smooth))), axis=0)  # surface normal's axis
    shell_count = np.bincount(facing[shell], minlength=3)
    error_count = np.bincount(facing[shell & (predicted != truth)], minlength=3)
    core = image[truth & (inside > 2)].mean()
    row = {"ventricle dice": dice(predicted, truth),
           "missed touching boundary": np.sum(missed & (inside <= 1)) / max(missed.sum(), 1),
           "extra touching boundary": np.sum(extra & (outside <= 1)) / max(extra.sum(), 1),
           "extra beyond 2 voxels": np.sum(extra & (outside > 2)) / max(extra.sum(), 1),
           "extra intensity / core": image[extra].mean() / core,
           "missed intensity / core": image[missed].mean() / core}
    row.update({f"boundary error rate, facing axis {a}": error_count[a] / max(shell_count[a], 1)
                for a in range(3)})
    return row


def piece_row(predicted: np.ndarray, truth: np.ndarray, min_size: int) -> dict:
    """Large connected pieces of extra and missed ventricle, and what they cost.

    ``predicted`` and ``truth`` hold label values. Returns the voxels in such pieces by the
    label the other side gave them, and the ventricle Dice with the pieces counted right.
    """
    row, fixed = {}, predicted == VENTRICLES
    names = {0: "unlabelled", **CLASSES}
    for kind, wrong, other in (("extra", (predicted == VENTRICLES) & (truth != VENTRICLES), truth),
                               ("missed", (truth == VENTRICLES) & (predicted != VENTRICLES),
                                predicted)):
        pieces, _ = ndimage.label(wrong)
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0  # not a piece: the voxels that are right
        large = np.isin(pieces, np.flatnonzero(sizes >= min_size))
        row[f"{kind} pieces >= {min_size}"] = int(np.sum(sizes >= min_size))
        for value, name in names.items():
            if value != VENTRICLES:
                row[f"{kind} in them, other said {name}"] = int(np.sum(large & (other == value)))
        fixed = fixed & ~large if kind == "extra" else fixed | large
    row["ventricle dice, large pieces right"] = dice(fixed, truth == VENTRICLES)
    return row


def tracing_row(truth: np.ndarray) -> dict:
    """Dice of the ventricles against their 3-slice majority along each axis."""
    row = {}
    for axis in range(3):
        size = [1, 1, 1]
        size[axis] = 3
        majority = ndimage.uniform_filter(truth.astype(np.float32), size=size) > 0.5
        row[f"majority along axis {axis}"] = dice(majority, truth)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="an accuracy.py --work folder")
    parser.add_argument("--folds", type=int, default=5, help="as given to accuracy.py")
    parser.add_argument("--seed", type=int, default=0, help="as given to accuracy.py")
    parser.add_argument("--source", type=Path, default=DATA / "oasis-dev")
    parser.add_argument("--piece", type=int, default=100,
                        help="voxels of a large piece of ventricle error (default 100)")
    parser.add_argument("--atrophied", action="store_true",
                        help="the atrophied copies of the held-out scans, not the scans")
    args = parser.parse_args()
    mode = "atrophied" if args.atrophied else "plain"

    subjects = [p.name for p in args.source.iterdir() if p.is_dir()]
    view_table, subject_table = [], []
    for fold, held_out in enumerate(folds_of(subjects, args.folds, args.seed), start=1):
        fold_dir = args.work / f"manual_fold{fold}"
        model = fold_dir / "run" / "model" / "model.keras"
        if not model.exists():
            continue
        for subject in held_out:
            folder = fold_dir / "atrophied" if args.atrophied else args.source / subject
            scan = read_volume(folder / f"{subject}_T1w_anat.mnc")
            truth = read_volume(folder / f"{subject}_variant-manual.mnc", label=True).data
            view_table += [{"fold": fold, "subject": subject, **row}
                           for row in view_rows(model, scan, truth)]
            predicted = read_volume(fold_dir / f"predict_{mode}" / f"{subject}_T1w_anat_dseg.mnc",
                                    label=True).data
            subject_table.append({"fold": fold, "subject": subject,
                                  **error_row(predicted == VENTRICLES, truth == VENTRICLES,
                                              scan.data.astype(np.float32)),
                                  **piece_row(predicted, truth, args.piece),
                                  **tracing_row(truth == VENTRICLES)})
            print(f"fold {fold}: {subject}", flush=True)
    if not subject_table:
        raise SystemExit(f"no fold models under {args.work}; run accuracy.py there first")
    views = pd.DataFrame(view_table)
    people = pd.DataFrame(subject_table).set_index(["fold", "subject"])
    views.to_csv(args.work / f"fold_analysis_views_{mode}.csv", index=False)
    people.to_csv(args.work / f"fold_analysis_errors_{mode}.csv")
    pd.set_option("display.width", 200)
    print(f"\nDice per class, mean over held-out subjects ({mode} scans)")
    print(views.pivot_table(index=["views", "offsets"], columns="class", values="dice")
          .round(3).to_string())
    print("\nventricle errors per held-out subject")
    print(people.round(3).T.to_string())
    tracing = people.filter(like="majority")
    print("\ncorrelation of ventricle Dice with the majority-filter change along each axis:",
          ", ".join(f"{c[-6:]} {np.corrcoef(1 - tracing[c], people['ventricle dice'])[0, 1]:+.2f}"
                    for c in tracing))


if __name__ == "__main__":
    main()
