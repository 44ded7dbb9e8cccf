"""Subject-level k-fold cross-validation of a training recipe on the OASIS dev subjects.

Each fold trains with the product's own command line on the other subjects (the fold's
training subjects are linked into a source folder; ``--ratios 0.85 0.15`` keeps a few
of them for validation), segments the held-out subjects with ``minc-keras predict``,
and scores the labels in the scan's own grid against the reference. As a stand-in for
a scan-rescan pair (none in the dev data), each held-out scan is "rescanned" twice: the
head moved by two independent small random rigid motions inside the same grid, each
with fresh noise, and the tissue volumes predicted for the two copies are compared
(``rescan``). Both copies go through the same resampling, whose slight blur makes the
predicted brain about 0.4 % smaller than in the original scan; the change between the
original and one moved copy (``moved``, the measure used before) counts that blur too
and is printed as well. ``--atrophied MM`` also
scores every model on an older-looking copy of each held-out scan: its ventricles (and
those of the reference labels) enlarged by MM voxels in 3-D with
:func:`minc_keras.data.augment.expand_class`, the tissue around them pushed aside (the dev
subjects are 19 to 34 years old; users' are not). ``--labels manual``
scores against the expert labels, ``--labels seg`` against FSL FAST (the model is then
trained on FAST labels, the workshop's task). Prints Dice per class for every held-out
subject, then mean and standard deviation over subjects, and training minutes per fold.

Examples::

    python benchmarks/accuracy.py --recipe fast --folds 5
    python benchmarks/accuracy.py --recipe default --folds 5 --only 1,2 --labels manual,seg
    python benchmarks/accuracy.py --recipe default --folds 5 --tta   # also with flip TTA
    python benchmarks/accuracy.py --recipe fast --folds 5 --uncalibrated  # also without offsets
    python benchmarks/accuracy.py --recipe fast --folds 5 --atrophied 4  # larger ventricles
    python benchmarks/accuracy.py --recipe fast --folds 5 --recalibrate  # refit kept models
    python benchmarks/accuracy.py --recipe fast --folds 5 -- --nK 8   # extra train flags
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA

from minc_keras.io import read_volume

CLASSES = {1: "CSF", 2: "GM", 3: "WM"}
LABEL_STRINGS = {"manual": "variant-manual", "seg": "variant-seg"}


def folds_of(subjects: list[str], k: int, seed: int) -> list[list[str]]:
    """``k`` disjoint groups of subjects, shuffled by ``seed``, sizes differing by at most 1."""
    order = np.random.default_rng(seed).permutation(sorted(subjects))
    return [sorted(str(s) for s in part) for part in np.array_split(order, k)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def simulate_rescan(scan: Path, dest: Path, seed: int) -> Path:
    """Write ``scan`` with the head moved (up to 3 degrees, 1.5 mm) and fresh noise added."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from minc_keras.io import write_volume

    volume = read_volume(scan)
    rng = np.random.default_rng(seed)
    rotation = Rotation.from_rotvec(np.deg2rad(rng.uniform(-3, 3, 3))).as_matrix()
    voxel_to_world = volume.affine[:3, :3]
    matrix = np.linalg.inv(voxel_to_world) @ rotation @ voxel_to_world  # motion in voxel units
    centre = (np.asarray(volume.shape) - 1) / 2
    shift = np.linalg.inv(voxel_to_world) @ rng.uniform(-1.5, 1.5, 3)
    offset = centre - matrix @ centre + shift
    data = ndimage.affine_transform(volume.data.astype(np.float32), matrix, offset, order=3)
    head = ndimage.affine_transform((volume.data > 0).astype(np.float32), matrix, offset,
                                    order=1) > 0.5  # the skull-stripping mask, moved
    data = np.where(head, data + rng.normal(0, 0.01 * data[head].mean(), data.shape), 0)
    return write_volume(volume.with_data(data.astype(np.float32)), dest, clobber=True)


def simulate_atrophy(scan: Path, reference: Path, folder: Path,
                     voxels: float) -> tuple[Path, Path]:
    """Write ``scan`` and its ``reference`` labels with the ventricles (label 1) enlarged."""
    from minc_keras.data.augment import expand_class
    from minc_keras.io import write_volume

    volume, labels = read_volume(scan), read_volume(reference, label=True)
    image, grown = expand_class(volume.data.astype(np.float32), labels.data, 1, voxels)
    return (write_volume(volume.with_data(image), folder / scan.name, clobber=True),
            write_volume(labels.with_data(grown), folder / reference.name, clobber=True))


def predict(model: Path, scans: list[Path], out: Path, tta: bool) -> float:
    """Segment ``scans`` into ``out`` with ``minc-keras predict``; seconds per scan."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minc_keras", "predict", "--model", str(model),
                    "-o", str(out), "--quiet", "--clobber", *(["--tta"] if tta else []),
                    *map(str, scans)], check=True)
    return (time.perf_counter() - start) / len(scans)


def uncalibrated_copy(model: Path) -> Path:
    """A copy of the model folder whose models carry no class offsets (``--calibrate`` undone)."""
    from minc_keras.models.info import update_info

    folder = model.parent.parent / "model_uncalibrated"
    if not folder.exists():
        shutil.copytree(model.parent, folder, ignore=shutil.ignore_patterns("checkpoints"))
        update_info(folder / model.name, {"class_offsets": None})
    return folder / model.name


def recalibrate(model: Path) -> None:
    """Fit a kept model's class offsets again with this version's ``--calibrate``."""
    from minc_keras.data.cache import SliceCache
    from minc_keras.training.calibration import ATROPHY_VOXELS, calibrate_model

    config = json.loads((model.parent / "config.json").read_text())
    if not config.get("calibrate"):
        return
    calibration = calibrate_model(
        model, SliceCache.open(model.parent.parent / "data"), batch_size=config["batch_size"],
        atrophy_voxels=ATROPHY_VOXELS if config.get("augment_atrophy") else 0.0)
    if calibration is not None:  # None: no validation scans to fit on
        print(f"  re{calibration.line()}", flush=True)


def train(source: Path, fold_dir: Path, held_out: list[str], labels: str, recipe: str,
          extra: list[str], refit: bool = False) -> tuple[Path, float]:
    """Train on every subject but ``held_out`` (or reuse that fold's model); model, minutes.

    ``refit`` fits a reused model's class offsets again (:func:`recalibrate`).
    """
    link_dir = fold_dir / "source"
    link_dir.mkdir(parents=True, exist_ok=True)
    for subject in sorted(p.name for p in source.iterdir() if p.is_dir()):
        if subject not in held_out and not (link_dir / subject).exists():
            (link_dir / subject).symlink_to(source / subject)
    target = fold_dir / "run"
    model = target / "model" / "model.keras"
    minutes_file = fold_dir / "train_minutes.txt"
    if model.exists() and minutes_file.exists():
        print(f"  reusing {model}", flush=True)
        if refit:
            recalibrate(model)
        return model, float(minutes_file.read_text())
    command = [sys.executable, "-m", "minc_keras", "run", "--source", str(link_dir),
               "--target", str(target), "--input-str", "T1w_anat", "--label-str",
               LABEL_STRINGS[labels], "--ratios", "0.85", "0.15", "--recipe", recipe,
               "--quiet", "--clobber", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    minutes = (time.perf_counter() - start) / 60
    minutes_file.write_text(f"{minutes:.3f}\n")
    return model, minutes


def _volumes(folder: Path) -> pd.DataFrame:
    """The ``volumes.csv`` of a ``predict`` output folder, indexed by scan file name."""
    table = pd.read_csv(folder / "volumes.csv")
    return table.set_index(table["scan"].map(lambda path: Path(path).name))


def _change(a: float, b: float) -> float:
    """Absolute difference of two volumes in percent of their mean."""
    return 100 * abs(a - b) / ((a + b) / 2)


def run_fold(source: Path, work: Path, fold: int, held_out: list[str], labels: str,
             recipe: str, extra: list[str], modes: list[str],
             atrophy_voxels: float = 0.0, refit: bool = False) -> list[dict]:
    """Train without ``held_out``, predict them, return one row per subject, class and mode."""
    fold_dir = work / f"{labels}_fold{fold}"
    model, train_minutes = train(source, fold_dir, held_out, labels, recipe, extra, refit)
    scans = {"": [source / s / f"{s}_T1w_anat.mnc" for s in held_out]}
    references = {"": [source / s / f"{s}_{LABEL_STRINGS[labels]}.mnc" for s in held_out]}
    if "atrophied" in modes:
        pairs = [simulate_atrophy(scan, reference, fold_dir / "atrophied", atrophy_voxels)
                 for scan, reference in zip(scans[""], references[""], strict=True)]
        scans["atrophied"], references["atrophied"] = map(list, zip(*pairs, strict=True))
    moved = {}  # kind -> per subject, two independently moved copies
    for kind, paths in scans.items():
        folder = fold_dir / f"rescan{kind}"
        moved[kind] = [(simulate_rescan(scan, folder / f"{s}_rescan_T1w_anat.mnc", k),
                        simulate_rescan(scan, folder / f"{s}_rescan2_T1w_anat.mnc", 100 + k))
                       for k, (s, scan) in enumerate(zip(held_out, paths, strict=True))]
    rows = []
    for mode in modes:
        kind = "atrophied" if mode.startswith("atrophied") else ""
        out, reout = fold_dir / f"predict_{mode}", fold_dir / f"repredict_{mode}"
        used = uncalibrated_copy(model) if mode.endswith("uncalibrated") else model
        predict_seconds = predict(used, scans[kind], out, tta=mode == "tta")
        predict(used, [copy for pair in moved[kind] for copy in pair], reout,
                tta=mode == "tta")
        original, again = _volumes(out), _volumes(reout)
        for row, subject in enumerate(held_out):
            predicted = read_volume(out / f"{subject}_T1w_anat_dseg.mnc", label=True).data
            reference = read_volume(references[kind][row], label=True).data
            first, second = (again.loc[path.name] for path in moved[kind][row])
            for value, name in CLASSES.items():
                column = [c for c in again.columns if c.endswith("_ml")][value - 1]
                rows.append({"labels": labels, "mode": mode, "fold": fold, "subject": subject,
                             "class": name, "dice": dice(predicted == value, reference == value),
                             "rescan_change_pct": _change(first[column], second[column]),
                             "moved_change_pct": _change(
                                 original.loc[scans[kind][row].name, column], first[column]),
                             "train_minutes": train_minutes,
                             "predict_seconds": predict_seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", default=None, help="run only these folds, e.g. 1,2")
    parser.add_argument("--labels", default="manual", help="manual, seg or manual,seg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=DATA / "oasis-dev")
    parser.add_argument("--work", type=Path, default=Path("accuracy-runs"),
                        help="working folder; a fold whose model is there is not retrained")
    parser.add_argument("--tta", action="store_true",
                        help="also score each model with flip test-time augmentation")
    parser.add_argument("--uncalibrated", action="store_true",
                        help="also score each model without its class offsets (--calibrate); "
                        "with --atrophied on the atrophied scans too")
    parser.add_argument("--atrophied", type=float, default=0.0, metavar="VOXELS",
                        help="also score each model on the held-out scans with their "
                        "ventricles enlarged by this many voxels (simulated atrophy)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="fit the class offsets of kept models again with this version "
                        "of --calibrate before scoring them")
    parser.add_argument("extra", nargs="*", help="flags passed on to `minc-keras run`")
    args = parser.parse_args()
    if not args.source.is_dir():
        sys.exit(f"{args.source} not found: the OASIS dev data are needed (../shared/data)")
    subjects = [p.name for p in args.source.iterdir() if p.is_dir()]
    folds = folds_of(subjects, args.folds, args.seed)
    chosen = [int(f) for f in args.only.split(",")] if args.only else range(1, args.folds + 1)
    modes = (["plain"] + ["tta"] * args.tta + ["uncalibrated"] * args.uncalibrated
             + ["atrophied"] * (args.atrophied > 0)
             + ["atrophied_uncalibrated"] * (args.atrophied > 0 and args.uncalibrated))
    rows: list[dict] = []
    for labels in args.labels.split(","):
        for fold in chosen:
            held_out = folds[fold - 1]
            print(f"fold {fold}/{args.folds} ({labels}): holding out {', '.join(held_out)}",
                  flush=True)
            fold_rows = run_fold(args.source, args.work, fold, held_out, labels, args.recipe,
                                 args.extra, modes, args.atrophied, args.recalibrate)
            rows += fold_rows
            frame = pd.DataFrame(fold_rows)
            table = frame.pivot(index=["mode", "subject"], columns="class", values="dice")
            print(table.round(3).to_string(), flush=True)
            change = frame.groupby(["mode", "class"])[["rescan_change_pct",
                                                       "moved_change_pct"]].mean()
            for mode in modes:
                print(f"  volume change % ({mode}), rescan pair: " + ", ".join(
                    f"{c} {change.loc[(mode, c), 'rescan_change_pct']:.2f}"
                    for c in CLASSES.values()) + "; original vs moved: " + ", ".join(
                    f"{c} {change.loc[(mode, c), 'moved_change_pct']:.2f}"
                    for c in CLASSES.values()), flush=True)
            print(f"  trained in {fold_rows[0]['train_minutes']:.1f} min, predicted in "
                  f"{fold_rows[0]['predict_seconds']:.1f} s per scan", flush=True)
    results = pd.DataFrame(rows)
    args.work.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.work / f"accuracy_{args.recipe}.csv", index=False)
    print(f"\nrecipe {args.recipe}, extra flags {json.dumps(args.extra)}, "
          f"{results['subject'].nunique()} held-out subjects")
    for (labels, mode), part in results.groupby(["labels", "mode"]):
        summary = part.groupby("class")["dice"].agg(["mean", "std"])
        text = " / ".join(f"{c} {summary.loc[c, 'mean']:.3f} +- {summary.loc[c, 'std']:.3f}"
                          for c in CLASSES.values())
        minutes = part.groupby("fold")["train_minutes"].first()
        print(f"Dice vs {labels} ({mode}): {text}; training {minutes.mean():.1f} min per fold "
              f"(max {minutes.max():.1f})")
        for column, what in (("rescan_change_pct", "simulated rescan pair"),
                             ("moved_change_pct", "original vs moved copy")):
            change = part.groupby("class")[column].agg(["mean", "max"])
            print(f"  {what}, volume change % mean (max): " + ", ".join(
                f"{c} {change.loc[c, 'mean']:.2f} ({change.loc[c, 'max']:.2f})"
                for c in CLASSES.values()))


if __name__ == "__main__":
    main()
