"""The one leaf every runner calls: segment a scan, as an outcome rather than an exception.

The serial runner (:mod:`minc_keras.predict.runner`), the fresh child processes
(:mod:`minc_keras.predict.processes`) and the Dask workers
(:mod:`minc_keras.predict.dask_runner`) all segment a scan with :func:`segment_scan`, so
their outputs are the same files. An error about the input (a :class:`MincKerasError`)
fails that scan only and becomes ``("failed", reason)``; anything else is a bug and
propagates. A process segmenting many scans loads the model once
(:func:`worker_segmenter`); its parent collects the outcomes (:func:`take_outcome`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from minc_keras.core.errors import MincKerasError
from minc_keras.predict.inputs import NotAScanError, scan_name
from minc_keras.predict.outputs import output_paths, segment_file
from minc_keras.predict.volumes import row_from_sidecar

if TYPE_CHECKING:  # the backend is imported only where a model runs (see predict.processes)
    from minc_keras.inference.segmenter import Segmenter

log = logging.getLogger(__name__)

#: ``("done", row of volumes.csv)``, ``("failed", one sentence saying why)``, or
#: ``("not_a_scan", why)`` for a label map or mask (:class:`NotAScanError`).
Outcome = tuple[str, dict | str]


class NotAScan(str):
    """The reason a file was refused as a label map or mask: a failure the runner may skip.

    A non-scan found while searching a folder is skipped, one named on the command line
    fails (:func:`minc_keras.predict.runner.predict_scans`).
    """


@functools.lru_cache(maxsize=4)
def worker_segmenter(model_path: str, tta: bool) -> Segmenter:
    """The model of ``model_path``, loaded once per worker process and kept."""
    # Deferred: the segmenter imports the Keras backend, which the parent process of the
    # fresh-process runner (predict.processes) must never import; only its children do.
    from minc_keras.inference.segmenter import load_segmenter

    return load_segmenter(Path(model_path), tta=tta)


def segment_scan(segmenter: Segmenter, path: Path, out_dir: Path, *, model_path: Path,
                 clobber: bool, save_probabilities: bool | list[str], batch_size: int,
                 name: str | None = None) -> Outcome:
    """Segment one scan with ``segmenter`` and write its outputs (:func:`segment_file`).

    Returns
    -------
    tuple
        ``("done", row)`` with the scan's ``volumes.csv`` row, or ``("failed", reason)``
        if the scan could not be segmented (an error about the input or the outputs).
    """
    try:
        row = segment_file(segmenter, path, out_dir, model_path=model_path, clobber=clobber,
                           save_probabilities=save_probabilities, batch_size=batch_size,
                           name=name)
    except NotAScanError as exc:
        return "not_a_scan", str(exc)
    except MincKerasError as exc:
        return "failed", str(exc)
    return "done", row


def _done_before(path: Path, out_dir: Path, name: str | None) -> dict | None:
    """The row of ``path`` if this scan's complete outputs exist already, else None."""
    label_path, sidecar_path = output_paths(path, out_dir, name or scan_name(path))
    if not label_path.exists():
        return None
    row = row_from_sidecar(sidecar_path)
    if row is None or row["scan"] != str(path) or row["output"] != str(label_path):
        return None
    return row


def segment_on_worker(path: str, *, model_path: str, out_dir: str, clobber: bool,
                      save_probabilities: bool | list[str], batch_size: int, tta: bool,
                      name: str | None = None, reuse_done: bool = False) -> Outcome:
    """Segment one scan in a worker process, loading the model there once: an :data:`Outcome`.

    ``name`` starts the outputs' file names (:func:`minc_keras.predict.inputs.output_names`).
    Paths come as strings, to travel to the worker. With ``reuse_done`` (and no
    ``clobber``), a scan whose outputs this run wrote already gives the row of its sidecar:
    Dask runs a task again when the worker holding its result dies before the result was
    collected.
    """
    if reuse_done and not clobber:
        row = _done_before(Path(path), Path(out_dir), name)
        if row is not None:
            return "done", row
    try:
        segmenter = worker_segmenter(model_path, tta)
    except MincKerasError as exc:
        return "failed", str(exc)
    return segment_scan(segmenter, Path(path), Path(out_dir), model_path=Path(model_path),
                        clobber=clobber, save_probabilities=save_probabilities,
                        batch_size=batch_size, name=name)


def take_outcome(scan: Path, outcome: Outcome, on_done: Callable[[dict], None],
                 failures: list[tuple[Path, str]]) -> None:
    """In the parent: pass a done scan's row to ``on_done``, or log and list a failed scan.

    A scan refused as a label map is listed with a :class:`NotAScan` reason.
    """
    status, result = outcome
    if status == "done":
        on_done(result)
    else:
        log.warning("skipped %s: %s", scan, result)
        failures.append((scan, NotAScan(result) if status == "not_a_scan" else result))
