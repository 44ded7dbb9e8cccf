"""Tissue volumes of a segmentation, and the run's ``volumes.csv`` table.

The table has one row per scan: ``scan``, ``output``, one ``<class>_ml`` column per
non-background class, ``total_ml``, ``gm_wm_ratio`` when classes are named GM and WM,
``qc_entropy`` and ``qc_flag`` (:mod:`minc_keras.predict.qc`). It grows scan by scan,
and the rows of scans segmented earlier can be rebuilt from their ``_dseg.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from minc_keras.core.atomic import atomic_output, file_lock
from minc_keras.predict.qc import flag_outliers

if TYPE_CHECKING:  # the backend is imported only where a model runs (see predict.processes)
    from minc_keras.models.info import ModelInfo

log = logging.getLogger(__name__)


def tissue_volumes(classes: np.ndarray, info: ModelInfo, voxel_ml: float) -> dict[str, float]:
    """Volume in mL of each non-background class, the total, and GM/WM when named so."""
    names = info.class_names
    counts = np.bincount(classes.ravel(), minlength=max(len(names), 2))
    out: dict[str, float] = {}
    for index in range(1, info.classes):
        out[f"{names[index]}_ml"] = float(counts[index] * voxel_ml)
    out["total_ml"] = float(sum(out.values()))
    return _with_gm_wm_ratio(out, names)


def _with_gm_wm_ratio(volumes: dict[str, float], names: list[str]) -> dict[str, float]:
    """``volumes`` and, when classes are named GM and WM, their ratio ``gm_wm_ratio``."""
    upper = {n.upper(): n for n in names}
    if "GM" in upper and "WM" in upper:
        wm = volumes[f"{upper['WM']}_ml"]
        volumes["gm_wm_ratio"] = volumes[f"{upper['GM']}_ml"] / wm if wm else float("nan")
    return volumes


def row_from_sidecar(sidecar_path: Path) -> dict | None:
    """The ``volumes.csv`` row of a scan segmented earlier, rebuilt from its ``_dseg.json``.

    None when the sidecar is missing or does not hold the volumes (then the scan's row
    cannot be restored without segmenting it again).
    """
    try:
        sidecar = json.loads(sidecar_path.read_text())
        volumes = {str(k): float(v) for k, v in sidecar["volumes_ml"].items()}
        row = {"scan": str(sidecar["source"]), "output": str(sidecar["labels"]),
               **_with_gm_wm_ratio(volumes, list(sidecar["class_names"])),
               "qc_entropy": float(sidecar["qc_entropy"])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return row


def restore_missing_rows(table_path: Path, sidecars: list[Path]) -> int:
    """Add to ``volumes.csv`` the rows of earlier scans that it lacks, from their sidecars.

    A job killed between writing a scan's outputs and its row (or by an older minc-keras
    that wrote the table only at the end) leaves such scans; ``--skip-existing`` then
    restores their rows instead of leaving them out of the table. Returns how many rows
    were added.
    """
    known: set[str] = set()
    if table_path.exists():
        try:
            known = set(pd.read_csv(table_path, usecols=["scan"])["scan"].astype(str))
        except (OSError, ValueError, pd.errors.ParserError):
            known = set()
    rows = [row for row in map(row_from_sidecar, sidecars)
            if row is not None and row["scan"] not in known]
    if rows:
        log.info("restoring the volumes.csv rows of %d scans segmented earlier", len(rows))
        update_volume_table(table_path, rows)
    return len(rows)


def update_volume_table(path: Path, rows: list[dict]) -> Path:
    """Add ``rows`` to the ``volumes.csv`` at ``path``, replacing earlier rows of their scans.

    Several ``predict`` runs (or processes at once) can write into one folder: the table
    is read, merged and rewritten atomically under a lock, so no run's rows are lost,
    and the QC outlier flags are recomputed over the whole table.
    """
    new = pd.DataFrame(rows)
    with file_lock(path.with_name(f".{path.name}.lock")):
        table = new
        if path.exists():
            try:
                old = pd.read_csv(path)
            except (OSError, ValueError, pd.errors.ParserError):
                old = None  # unreadable: replaced by this run's rows (the labels are intact)
                log.warning("%s could not be read; rewriting it with this run's scans", path)
            if old is not None and list(old.columns.drop("qc_flag", errors="ignore")) \
                    == list(new.columns):
                kept = old[~old["scan"].isin(new["scan"])].drop(columns="qc_flag",
                                                                errors="ignore")
                table = pd.concat([kept, new], ignore_index=True)
            elif old is not None:
                log.warning("%s has other columns (another model?); rewriting it with this "
                            "run's scans", path)
        table = table.sort_values("scan", kind="stable").reset_index(drop=True)
        table["qc_flag"] = flag_outliers(table)
        with atomic_output(path, clobber=True) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
    return path
