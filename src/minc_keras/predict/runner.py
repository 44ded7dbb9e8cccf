"""``minc-keras predict``: segment new scans in their own grid and format, with volumes and QC.

For every input scan: ``<name>_dseg.<suffix>`` (labels in the scan's grid and format),
optionally ``<name>_label-<class>_probseg.<suffix>`` (the class name's letters and digits:
``label-GM``, ``label-label1``), and ``<name>_dseg.json`` (model,
versions, class names, source, volumes, QC). For the run: ``volumes.csv``. A scan that
cannot be read is reported and skipped; the others complete.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from minc_keras import __version__
from minc_keras.core.atomic import (
    atomic_output,
    check_writable,
    file_lock,
    removed_if_left_empty,
    write_text_atomic,
)
from minc_keras.core.errors import DatasetError, MincKerasError, OutputExistsError, UsageError
from minc_keras.core.progress import progress
from minc_keras.io import IMAGE_SUFFIXES, Volume, output_suffix, read_volume, write_volume
from minc_keras.predict.processes import SCANS_PER_PROCESS, segment_in_fresh_processes

if TYPE_CHECKING:  # the backend is imported only where a model runs (see process_recycling)
    from minc_keras.inference.segmenter import Segmenter

log = logging.getLogger(__name__)

#: A scan whose QC score is this many robust standard deviations from the median is flagged.
QC_OUTLIER_Z = 3.5


@dataclass
class PredictReport:
    """Outcome of a predict run."""

    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    table_path: Path | None = None


def _is_image(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Expand files, folders (searched recursively) and globs into a sorted list of scans.

    Raises
    ------
    UsageError
        If an input names nothing that exists, or nothing at all is found.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"{item} matches no file or folder; check the path or the glob")
            found += [p for p in matches if p.is_file()]
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UsageError(f"no scans (.mnc, .mnc.gz, .nii, .nii.gz) found in {' '.join(inputs)}; "
                         "give scan files, folders that hold them, or globs")
    return unique


def scan_name(path: Path) -> str:
    """File name without its image suffix.

    >>> scan_name(Path("a/sub-01_T1w.nii.gz")), scan_name(Path("b.MNC"))
    ('sub-01_T1w', 'b')
    """
    lower = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def output_names(scans: list[Path]) -> dict[Path, str]:
    """The name each scan's outputs take: its file name without the suffix, made unique.

    Scans that share a name (``a/T1.mnc`` and ``b/T1.mnc``, as in a cohort of one folder
    per subject) are told apart by the fewest parent folders that differ, joined by ``_``
    (``a_T1``, ``b_T1``); the same name in two formats in one folder by the format
    (``T1_mnc``, ``T1_niigz``).

    Raises
    ------
    UsageError
        If two scans would still write the same outputs.

    Examples
    --------
    >>> names = output_names([Path("/d/a/T1.mnc"), Path("/d/b/T1.mnc"), Path("/d/b/x.nii")])
    >>> [names[Path(p)] for p in ("/d/a/T1.mnc", "/d/b/T1.mnc", "/d/b/x.nii")]
    ['a_T1', 'b_T1', 'x']
    >>> sorted(output_names([Path("/d/T1.mnc"), Path("/d/T1.nii.gz")]).values())
    ['T1_mnc', 'T1_niigz']
    """
    groups: dict[str, list[Path]] = {}
    for scan in scans:
        groups.setdefault(scan_name(scan), []).append(scan)
    names: dict[Path, str] = {}
    for stem, group in groups.items():
        names.update(zip(group, _told_apart(stem, group), strict=True))
    taken: dict[str, Path] = {}
    for scan, name in names.items():
        if name in taken:
            raise UsageError(f"{taken[name]} and {scan} would both write {name}_dseg.*; rename "
                             "one, or segment them into separate output folders")
        taken[name] = scan
    return names


def _told_apart(stem: str, group: list[Path]) -> list[str]:
    """Names for scans that share ``stem``: parent folders first, then the format."""
    if len(group) == 1:
        return [stem]
    folders = [scan.parent.parts[1:] if scan.parent.is_absolute() else scan.parent.parts
               for scan in group]
    formats = ["".join(c for c in scan.name[len(stem):] if c.isalnum()).lower() for scan in group]
    depth = max(len(f) for f in folders)
    tries = [[f"{'_'.join(f[-k:])}_{stem}" for f in folders] for k in range(1, depth + 1)]
    tries += [[f"{'_'.join(f[len(f) - k:])}_{stem}_{fmt}".lstrip("_")
               for f, fmt in zip(folders, formats, strict=True)] for k in range(depth + 1)]
    for names in tries:
        if len(set(names)) == len(names):
            return names
    return [stem] * len(group)  # the same file twice: refused by the caller


def bids_label(name: str, index: int) -> str:
    """A class name as the value of a BIDS ``label-`` entity: its letters and digits only.

    BIDS entity values are alphanumeric, and a name such as ``grey matter`` or ``a/b``
    must not split a file name or make a folder.

    >>> bids_label("label_1", 1), bids_label("grey matter", 2), bids_label("__", 3)
    ('label1', 'greymatter', 'class3')
    """
    return re.sub(r"[^0-9A-Za-z]", "", name) or f"class{index}"


def normalised_entropy(probs: np.ndarray, where: np.ndarray) -> float:
    """Mean entropy of the class probabilities in ``where``, divided by its maximum.

    0 means every voxel was classified with certainty, 1 means uniform guessing.

    >>> p = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> round(normalised_entropy(p, np.array([True, True])), 3)
    0.5
    """
    if not where.any():
        return float("nan")
    p = probs[where]
    if p.shape[-1] == 1:
        p = np.concatenate([1 - p, p], axis=-1)
    p = np.clip(p, 1e-7, 1.0)
    entropy = -(p * np.log(p)).sum(axis=-1) / np.log(p.shape[-1])
    return float(entropy.mean())


def tissue_volumes(classes: np.ndarray, info: dict, voxel_ml: float) -> dict[str, float]:
    """Volume in mL of each non-background class, the total, and GM/WM when named so."""
    names = info["class_names"]
    counts = np.bincount(classes.ravel(), minlength=max(len(names), 2))
    out: dict[str, float] = {}
    for index in range(1, max(info["num_outputs"], 2)):
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


def flag_outliers(table: pd.DataFrame, column: str = "qc_entropy") -> pd.Series:
    """True for scans whose ``column`` is far (robust z > 3.5) above the others'."""
    values = table[column].astype(float)
    if values.notna().sum() < 5:
        return pd.Series(False, index=table.index)
    median = values.median()
    mad = (values - median).abs().median() * 1.4826 or 1e-9
    return (values - median) / mad > QC_OUTLIER_Z


def _outputs(path: Path, out_dir: Path, name: str) -> tuple[Path, Path]:
    """The labels and sidecar of scan ``path``, whose outputs are named ``name``."""
    return out_dir / f"{name}_dseg{output_suffix(path)}", out_dir / f"{name}_dseg.json"


def _sidecar_labels(path: Path) -> str | None:
    """The labels file a ``_dseg.json`` sidecar names, or None (no sidecar, or not ours)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (OSError, ValueError, AttributeError):
        return None


#: A volume with at most this many distinct whole-number values is a label map or mask.
LABEL_MAP_MAX_VALUES = 32


def check_is_scan(data: np.ndarray) -> None:
    """Refuse a label map or mask given as a scan (a subject's folder holds both).

    Raises
    ------
    DatasetError
        If ``data`` (every second voxel along each axis) holds at most
        :data:`LABEL_MAP_MAX_VALUES` distinct values, all whole numbers.

    >>> check_is_scan(np.linspace(0, 1, 512).reshape(8, 8, 8))
    >>> check_is_scan(np.zeros((4, 4, 4)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    minc_keras.core.errors.DatasetError: it holds 1 distinct value (0), so it is a label map...
    """
    values = np.unique(np.asarray(data)[::2, ::2, ::2])
    if len(values) > LABEL_MAP_MAX_VALUES or not np.array_equal(values, np.round(values)):
        return
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise DatasetError(f"it holds {len(values)} distinct value{'s' if len(values) != 1 else ''} "
                       f"({shown}), so it is a label map or mask, not a scan; leave it out "
                       "of the inputs")  # the caller names the file


def segment_file(segmenter: Segmenter, path: Path, out_dir: Path, *, model_path: Path,
                 clobber: bool = False, save_probabilities: bool = False,
                 batch_size: int = 8, name: str | None = None) -> dict:
    """Segment one scan file and write its outputs; return its row for ``volumes.csv``.

    ``name`` starts the outputs' file names (default: the scan's, :func:`output_names`).
    """
    from minc_keras.inference.segment import segment_volume

    name = name or scan_name(path)
    label_path, sidecar_path = _outputs(path, out_dir, name)
    if label_path.exists() and not clobber:
        raise OutputExistsError(f"{label_path} exists already; pass --clobber to replace it")
    info = segmenter.info
    volume = read_volume(path)
    check_is_scan(volume.data)
    result = segment_volume(segmenter, volume, batch_size=batch_size)
    row = {"scan": str(path), "output": str(label_path),
           **tissue_volumes(result.classes, info, volume.voxel_volume_ml),
           "qc_entropy": normalised_entropy(result.probabilities, result.classes > 0)}
    sidecar = {"source": str(path), "labels": str(label_path), "model": str(model_path),
               "minc_keras_version": __version__,
               "keras_backend": info.get("keras_backend"),
               "class_values": info["class_values"], "class_names": info["class_names"],
               "views": segmenter.views, "shift_passes": segmenter.shift_passes,
               "tta": segmenter.tta,
               "class_offsets": segmenter.class_offsets,
               "volumes_ml": {k: v for k, v in row.items() if k.endswith("_ml")},
               "qc_entropy": row["qc_entropy"]}
    written: list[Path] = []
    # a scan's outputs come as a set: if one cannot be written, none is left. The sidecar
    # goes first and the labels last, so a scan whose labels exist (what --skip-existing
    # looks for) always has its sidecar, and its volumes.csv row can be restored even if
    # the job was killed; probability maps beside a sidecar but no labels are what such
    # a job left, and are replaced.
    unfinished = not label_path.exists() and _sidecar_labels(sidecar_path) == str(label_path)
    try:
        written.append(write_text_atomic(sidecar_path, json.dumps(sidecar, indent=1)))
        if save_probabilities:
            for index in range(1 if result.probabilities.shape[-1] == 1 else 0,
                               result.probabilities.shape[-1]):
                class_name = info["class_names"][index if result.probabilities.shape[-1] > 1
                                                 else 1]
                written.append(write_volume(
                    Volume(result.probabilities[..., index], volume.affine),
                    out_dir / f"{name}_label-{bids_label(class_name, index)}_probseg"
                              f"{output_suffix(path)}",
                    clobber=clobber or unfinished))
        written.append(write_volume(
            Volume(result.labels, volume.affine), label_path, clobber=clobber,
            history=f"minc-keras {__version__} predict --model {model_path} {path}"))
    except BaseException:
        for done in written:
            done.unlink(missing_ok=True)
        raise
    return row


def predict_scans(model_path: str | os.PathLike, inputs: list[str], out_dir: str | os.PathLike,
                  *, clobber: bool = False, save_probabilities: bool = False,
                  batch_size: int = 8, tta: bool = False, quiet: bool = False,
                  skip_existing: bool = False, scheduler: str = "serial", workers: int = 2,
                  scheduler_address: str | None = None,
                  scans_per_process: int = SCANS_PER_PROCESS) -> PredictReport:
    """Segment every scan named by ``inputs`` with the model at ``model_path``.

    Parameters
    ----------
    model_path : path-like
        A ``model.keras`` saved by ``minc-keras train``; loaded once.
    inputs : list of str
        Files, folders or globs.
    out_dir : path-like
        Where the outputs and ``volumes.csv`` go.
    clobber : bool
        Replace existing outputs.
    save_probabilities : bool
        Also write one probability map per class.
    batch_size : int
        Slices per forward pass.
    tta : bool
        Average in the prediction of the left-right mirrored scan.
    quiet : bool
        No progress bar.
    skip_existing : bool
        Leave out scans whose labels exist already in ``out_dir`` (resume an
        interrupted cohort run); they are listed in ``report.skipped``.
    scheduler : {"serial", "dask"}
        ``"dask"`` segments the scans in parallel on ``dask.distributed``
        (:mod:`minc_keras.predict.dask_runner`), with the same outputs as the serial run.
    workers : int
        Worker processes of the local Dask cluster.
    scheduler_address : str, optional
        A running Dask scheduler to use instead of a local cluster.
    scans_per_process : int
        With the serial scheduler and more scans than this, the scans are segmented in
        child processes replaced every ``scans_per_process`` scans, which keeps memory
        bounded over a cohort (:mod:`minc_keras.predict.processes`); fewer scans are
        segmented in this process.

    Returns
    -------
    PredictReport
        Rows for the scans done, and the scans that failed with the reason.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} is below 1; give a whole number of slices "
                         "per pass, such as 8")
    if scheduler not in ("serial", "dask"):
        raise UsageError(f"--scheduler {scheduler} is not known; choose serial or dask")
    scans = collect_inputs(inputs)
    names = output_names(scans)
    in_fresh_processes = scheduler == "serial" and len(scans) > scans_per_process
    if not in_fresh_processes:  # there, the first child checks the model
        from minc_keras.inference.segmenter import load_segmenter

        segmenter = load_segmenter(Path(model_path), tta=tta)  # checks the model up front
    out_dir = Path(out_dir)
    # a run that segments nothing (its one scan failed) leaves no empty folder behind
    with removed_if_left_empty(out_dir):
        # an output folder that cannot be written fails once, not once per scan
        check_writable(out_dir / "volumes.csv", clobber=True)
        report = PredictReport()
        table_path = out_dir / "volumes.csv"

        def record(row: dict) -> None:
            # volumes.csv grows scan by scan, so a killed job keeps the rows of the scans done
            report.rows.append(row)
            report.table_path = update_volume_table(table_path, [row])

        if skip_existing and not clobber:
            report.skipped = [p for p in scans if _outputs(p, out_dir, names[p])[0].exists()]
            done = set(report.skipped)
            scans = [p for p in scans if p not in done]
            if restore_missing_rows(table_path,
                                    [_outputs(p, out_dir, names[p])[1] for p in report.skipped]):
                report.table_path = table_path
        if scheduler == "dask" and scans:
            from minc_keras.predict.dask_runner import segment_on_dask

            report.failures = segment_on_dask(
                Path(model_path), scans, out_dir, names=names, clobber=clobber,
                save_probabilities=save_probabilities, batch_size=batch_size, tta=tta,
                workers=workers, address=scheduler_address, quiet=quiet, on_done=record)
            scans = []
        if in_fresh_processes and scans:
            report.failures = segment_in_fresh_processes(
                Path(model_path), scans, out_dir, names=names, clobber=clobber,
                save_probabilities=save_probabilities, batch_size=batch_size, tta=tta, quiet=quiet,
                on_done=record, scans_per_process=scans_per_process)
            scans = []
        for path in progress(scans, desc="segmenting", unit="scan", disable=quiet):
            try:
                record(segment_file(segmenter, path, out_dir, model_path=Path(model_path),
                                    clobber=clobber, save_probabilities=save_probabilities,
                                    batch_size=batch_size, name=names[path]))
            except MincKerasError as exc:
                log.warning("skipped %s: %s", path, exc)
                report.failures.append((path, str(exc)))
        return report


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
