"""How much of FSL FAST's segmentation one intensity threshold per tissue boundary explains.

FAST labels a T1 scan from its intensities (a Gaussian mixture with bias correction and a
neighbourhood prior), so a network trained on FAST labels should do at least as well as
one threshold on the normalised intensity at each of FAST's two tissue boundaries. For
every dev subject and each boundary (CSF | GM and GM | WM), among the voxels FAST gives
one of the two classes, this script finds

* the scan's own best threshold on the intensities as the product normalises them
  (:func:`minc_keras.preprocessing.transforms.normalise_intensity`), an oracle, and
* one threshold fixed in advance: the median of the other scans' best thresholds;

and prints the Dice of FAST's GM within those voxels for both. With ``--work`` (the folder
of an ``accuracy.py --labels seg`` run) it prints, on the same voxels, the Dice of the
run's predictions for the held-out subjects, so a network can be compared with the
threshold directly, and the GM Dice over the whole brain of the network and of the two
fixed thresholds applied together.

Examples::

    python benchmarks/fast_threshold.py
    python benchmarks/fast_threshold.py --work runs/seg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA
from accuracy import dice

from minc_keras.io import read_volume
from minc_keras.preprocessing.transforms import normalise_intensity

#: FAST's labels: 1 CSF, 2 GM, 3 WM. Each boundary as (darker class, brighter class).
BOUNDARIES = {"CSF|GM": (1, 2), "GM|WM": (2, 3)}
GM = 2


def best_threshold(values: np.ndarray, brighter: np.ndarray, gm_is_brighter: bool
                   ) -> float:
    """The threshold on ``values`` that best splits off ``brighter``, by GM Dice."""
    candidates = np.percentile(values, np.linspace(1, 99, 197))
    scores = [gm_dice(values, brighter, t, gm_is_brighter) for t in candidates]
    return float(candidates[int(np.argmax(scores))])


def gm_dice(values: np.ndarray, brighter: np.ndarray, threshold: float,
            gm_is_brighter: bool) -> float:
    """Dice of GM when the voxels above ``threshold`` are called the brighter class."""
    return dice((values > threshold) == gm_is_brighter, brighter == gm_is_brighter)


def scan(source: Path, subject: str) -> tuple[np.ndarray, np.ndarray]:
    """A subject's intensities, normalised as the product does (0 outside the brain), and
    FAST's labels."""
    folder = source / subject
    image = read_volume(folder / f"{subject}_T1w_anat.mnc").data.astype(np.float32)
    fast = np.asarray(read_volume(folder / f"{subject}_variant-seg.mnc", label=True).data)
    return normalise_intensity(image, image > 0)[0], fast


def subject_rows(source: Path) -> list[dict]:
    """Per subject and boundary: the normalised intensities and FAST's classes there."""
    rows = []
    for subject in sorted(p.name for p in source.iterdir() if p.is_dir()):
        normalised, fast = scan(source, subject)
        for boundary, (darker, brighter) in BOUNDARIES.items():
            where = (fast == darker) | (fast == brighter)
            values, upper = normalised[where], fast[where] == brighter
            rows.append({"subject": subject, "boundary": boundary, "where": where,
                         "values": values, "brighter": upper, "gm_is_brighter": brighter == GM,
                         "own": best_threshold(values, upper, brighter == GM)})
    return rows


def network_labels(work: Path) -> dict[str, np.ndarray]:
    """The held-out predictions of an ``accuracy.py --labels seg`` run, by subject."""
    return {path.name.split("_")[0]: np.asarray(read_volume(path, label=True).data)
            for path in sorted(work.glob("seg_fold*/predict_plain/*_dseg.mnc"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DATA / "oasis-dev")
    parser.add_argument("--work", type=Path, help="an accuracy.py --labels seg run folder")
    args = parser.parse_args()
    if not args.source.is_dir():
        raise SystemExit(f"no dev data at {args.source}")
    rows = subject_rows(args.source)
    predicted = network_labels(args.work) if args.work else {}
    table = []
    for row in rows:
        others = [r["own"] for r in rows
                  if r["boundary"] == row["boundary"] and r["subject"] != row["subject"]]
        fixed = float(np.median(others))
        entry = {"subject": row["subject"], "boundary": row["boundary"],
                 "own threshold": row["own"], "fixed threshold": fixed,
                 "Dice own": gm_dice(row["values"], row["brighter"], row["own"],
                                     row["gm_is_brighter"]),
                 "Dice fixed": gm_dice(row["values"], row["brighter"], fixed,
                                       row["gm_is_brighter"])}
        if row["subject"] in predicted:
            labels = predicted[row["subject"]][row["where"]]
            entry["Dice network"] = dice(labels == GM, row["brighter"] == row["gm_is_brighter"])
        table.append(entry)
    whole = []
    for subject, labels in predicted.items():
        normalised, fast = scan(args.source, subject)
        fixed = {r["boundary"]: r["fixed threshold"] for r in table if r["subject"] == subject}
        thresholded = np.where(fast > 0, 1 + (normalised > fixed["CSF|GM"])
                               + (normalised > fixed["GM|WM"]), 0)
        whole.append({"subject": subject, "GM Dice fixed thresholds": dice(thresholded == GM,
                                                                          fast == GM),
                      "GM Dice network": dice(labels == GM, fast == GM)})
    frame = pd.DataFrame(table)
    with pd.option_context("display.width", 140, "display.float_format", "{:.3f}".format):
        print("GM Dice against FAST among the voxels FAST labels as either class of a boundary")
        print(frame.to_string(index=False))
        print(frame.groupby("boundary").mean(numeric_only=True).to_string())
        if predicted:
            held_out = frame[frame["subject"].isin(predicted)]
            print(f"held-out subjects of {args.work} only:")
            print(held_out.groupby("boundary").mean(numeric_only=True).to_string())
            print("over the whole brain:")
            print(pd.DataFrame(whole).to_string(index=False))


if __name__ == "__main__":
    main()
