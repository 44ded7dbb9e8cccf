"""``minc-keras predict``: segment new scans in their own grid and format, with volumes and QC.

For every input scan, its outputs (:mod:`minc_keras.predict.outputs`); for the run,
``volumes.csv`` (:mod:`minc_keras.predict.volumes`). A scan that cannot be read is
reported and skipped; the others complete. The scans are segmented in this process, in
fresh child processes (:mod:`minc_keras.predict.processes`) or on Dask
(:mod:`minc_keras.predict.dask_runner`), each scan by :mod:`minc_keras.predict.worker`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from minc_keras.core.atomic import check_writable, removed_if_left_empty
from minc_keras.core.errors import MincKerasError, UsageError
from minc_keras.core.progress import progress
from minc_keras.predict.bids import (
    bids_desc,
    bids_output_names,
    write_dataset_files,
    write_dseg_tsv,
)
from minc_keras.predict.dask_runner import import_distributed, segment_on_dask
from minc_keras.predict.inputs import find_inputs, output_names
from minc_keras.predict.outputs import output_paths
from minc_keras.predict.processes import SCANS_PER_PROCESS, segment_in_fresh_processes
from minc_keras.predict.qc_figures import draw_qc_picture
from minc_keras.predict.qc_page import write_qc_page
from minc_keras.predict.volumes import restore_missing_rows, update_volume_table
from minc_keras.predict.worker import NotAScan, segment_scan, take_outcome

if TYPE_CHECKING:  # the backend is imported only where a model runs (see predict.processes)
    from minc_keras.inference.segmenter import Segmenter

log = logging.getLogger(__name__)


@dataclass
class PredictReport:
    """Outcome of a predict run."""

    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    table_path: Path | None = None
    qc_page: Path | None = None
    #: Files found in a folder or by a glob that are label maps or masks, with the reason.
    not_scans: list[tuple[Path, str]] = field(default_factory=list)


def _check_options(batch_size: int, scheduler: str) -> None:
    """Refuse a ``batch_size`` or ``scheduler`` that cannot work, before any scan is read."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"`batch_size` {batch_size} is below 1; give a whole number of slices "
                         "per pass, such as 8")
    if scheduler not in ("serial", "dask"):
        raise UsageError(f"`scheduler` {scheduler} is not known; choose serial or dask")
    if scheduler == "dask":
        import_distributed()  # a missing extra is said before any model is loaded


def _load_segmenter(model_path: Path, tta: bool) -> Segmenter:
    """The model, loaded in this process (which checks it before any output is made)."""
    # Deferred: the segmenter imports the Keras backend, which this process must not import
    # when it only runs the fresh-process runner (predict.processes).
    from minc_keras.inference.segmenter import load_segmenter

    return load_segmenter(model_path, tta=tta)


def _write_bids_files(out_dir: Path, sidecar: Path) -> None:
    """``dataset_description.json``, ``.bidsignore`` and ``dseg.tsv`` (classes from a sidecar)."""
    write_dataset_files(out_dir)
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        write_dseg_tsv(out_dir, info["class_values"], info["class_names"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("no dseg.tsv written: %s could not be read (%s)", sidecar, exc)


def _draw_qc(row: dict, sidecar: Path) -> None:
    """Draw the QC picture of a scan just segmented; a picture that fails is only logged."""
    try:
        class_names = json.loads(sidecar.read_text(encoding="utf-8")).get("class_names")
    except (OSError, ValueError, AttributeError):
        class_names = None
    try:
        draw_qc_picture(row["scan"], row["output"], class_names=class_names)
    except (MincKerasError, OSError, ValueError) as exc:
        log.warning("no QC picture for %s: %s", row["scan"], exc)


def _segment_here(segmenter: Segmenter, scans: list[Path], out_dir: Path, *,
                  names: dict[Path, str], model_path: Path, clobber: bool,
                  save_probabilities: bool | list[str], batch_size: int, quiet: bool,
                  on_done: Callable[[dict], None]) -> list[tuple[Path, str]]:
    """Segment ``scans`` one after another in this process; return the failures."""
    failures: list[tuple[Path, str]] = []
    for path in progress(scans, desc="segmenting", unit="scan", disable=quiet):
        outcome = segment_scan(segmenter, path, out_dir, model_path=model_path, clobber=clobber,
                               save_probabilities=save_probabilities, batch_size=batch_size,
                               name=names[path])
        try:
            take_outcome(path, outcome, on_done, failures)
        except MincKerasError as exc:  # its row could not be written: the scan failed
            log.warning("skipped %s: %s", path, exc)
            failures.append((path, str(exc)))
    return failures


def predict_scans(model_path: str | os.PathLike, inputs: list[str], out_dir: str | os.PathLike,
                  *, clobber: bool = False, save_probabilities: bool | list[str] = False,
                  batch_size: int = 8, tta: bool = False, quiet: bool = False,
                  skip_existing: bool = False, scheduler: str = "serial", workers: int = 2,
                  scheduler_address: str | None = None, scheduler_file: str | None = None,
                  scans_per_process: int = SCANS_PER_PROCESS, qc: bool = False,
                  bids: bool = False) -> PredictReport:
    """Segment every scan named by ``inputs`` with the model at ``model_path``.

    Parameters
    ----------
    model_path : path-like
        A ``model.keras`` saved by ``minc-keras train``; loaded once.
    inputs : list of str
        Files, folders, globs or ``@list.txt`` files (one scan per line, relative to the
        list's folder). A label map or mask found in a folder or by a glob is left out
        (``report.not_scans``); one named explicitly fails.
    out_dir : path-like
        Where the outputs and ``volumes.csv`` go.
    clobber : bool
        Replace existing outputs.
    save_probabilities : bool or list of str
        Also write one probability map per class (True), or those of the classes named.
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
    scheduler_file : str, optional
        The scheduler file of a running Dask cluster (dask-jobqueue, dask-mpi).
    scans_per_process : int
        With the serial scheduler and more scans than this, the scans are segmented in
        child processes replaced every ``scans_per_process`` scans, which keeps memory
        bounded over a cohort (:mod:`minc_keras.predict.processes`); fewer scans are
        segmented in this process.
    qc : bool
        Also draw each scan's QC picture (:mod:`minc_keras.predict.qc_figures`) and rebuild
        ``out_dir/qc.html`` (:mod:`minc_keras.predict.qc_page`).
    bids : bool
        Write BIDS derivatives (:mod:`minc_keras.predict.bids`): every scan must be
        BIDS-named. Without it, the outputs lie flat in ``out_dir``.

    Returns
    -------
    PredictReport
        Rows for the scans done, and the scans that failed with the reason.
    """
    _check_options(batch_size, scheduler)
    found = find_inputs(inputs)
    scans = found.scans
    model_path = Path(model_path)
    names = bids_output_names(scans, bids_desc(model_path)) if bids else output_names(scans)
    in_fresh_processes = scheduler == "serial" and len(scans) > scans_per_process
    # there, the first child checks the model; elsewhere it is checked up front
    segmenter = None if in_fresh_processes else _load_segmenter(model_path, tta)
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
            sidecar = output_paths(Path(row["scan"]), out_dir, names[Path(row["scan"])])[1]
            if bids and len(report.rows) == 1:
                _write_bids_files(out_dir, sidecar)
            if qc:
                _draw_qc(row, sidecar)

        if skip_existing and not clobber:
            report.skipped = [p for p in scans if output_paths(p, out_dir, names[p])[0].exists()]
            done = set(report.skipped)
            scans = [p for p in scans if p not in done]
            if restore_missing_rows(table_path, [output_paths(p, out_dir, names[p])[1]
                                                 for p in report.skipped]):
                report.table_path = table_path
        if scans:
            options = {"names": names, "clobber": clobber,
                       "save_probabilities": save_probabilities, "batch_size": batch_size,
                       "quiet": quiet, "on_done": record}
            if scheduler == "dask":
                failures = segment_on_dask(model_path, scans, out_dir, tta=tta, workers=workers,
                                           address=scheduler_address,
                                           scheduler_file=scheduler_file, **options)
            elif segmenter is None:
                failures = segment_in_fresh_processes(
                    model_path, scans, out_dir, tta=tta, scans_per_process=scans_per_process,
                    **options)
            else:
                failures = _segment_here(segmenter, scans, out_dir, model_path=model_path,
                                         **options)
            # a label map found beside its scan in a folder is left out, not a failure
            report.not_scans = [(p, r) for p, r in failures
                                if isinstance(r, NotAScan) and p in found.searched]
            report.failures = [(p, str(r)) for p, r in failures
                               if not (isinstance(r, NotAScan) and p in found.searched)]
        if qc and table_path.exists():
            report.qc_page = write_qc_page(out_dir)
        return report
