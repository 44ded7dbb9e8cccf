"""Segment a long list of scans in child processes that are replaced every few scans.

The deep-learning backend keeps a little native memory from every forward pass (measured
with torch on the CPU, whatever the allocator's settings, and more when the slice shapes
vary from scan to scan: ``benchmarks/README.md``, "Memory over a cohort"); Python's own
objects stay flat, and one process segmenting a large cohort grows without end. So a cohort
is segmented in chunks of ``scans_per_process`` scans, each in a fresh process that loads
the model once: memory stays bounded whatever the cohort size, for a few seconds of start-up
per chunk. This process (the parent) never imports the backend; it only collects the rows:
the modules it imports (:mod:`minc_keras.predict.worker` and those below it) import the
backend only inside the functions that run a model.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from minc_keras.core.errors import ProcessDiedError
from minc_keras.core.progress import progress
from minc_keras.predict.worker import Outcome, segment_on_worker, take_outcome, worker_segmenter

#: Scans one process segments before a fresh one takes over (about 2-3 % start-up cost).
SCANS_PER_PROCESS = 32


def _start_child(level: int) -> None:
    """Log in the child as the command line does (the child starts with Python's defaults)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("nibabel.global").setLevel(logging.CRITICAL)


def _load_model(model_path: str, tta: bool) -> None:
    """Load the model in the child (kept for its scans); raises if it is not usable."""
    worker_segmenter(model_path, tta)


def _result(future: Future, scan: Path) -> Outcome:
    """The future's result; a child that died becomes one sentence, not a traceback."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise ProcessDiedError(
            f"the process segmenting {scan} ended without finishing it (killed, or out of "
            "memory?); rerun the same command with `skip_existing` to go on from there"
        ) from None


def segment_in_fresh_processes(model_path: Path, scans: list[Path], out_dir: Path, *,
                               names: dict[Path, str] | None = None, clobber: bool,
                               save_probabilities: bool | list[str], batch_size: int,
                               tta: bool, quiet: bool, on_done: Callable[[dict], None],
                               scans_per_process: int = SCANS_PER_PROCESS
                               ) -> list[tuple[Path, str]]:
    """Segment ``scans`` one after another, ``scans_per_process`` per child process.

    Parameters
    ----------
    model_path : Path
        The model; loaded once in each child.
    scans : list of Path
        Scans to segment, in order.
    out_dir : Path
        Where the outputs go.
    names : dict, optional
        The name each scan's outputs take (:func:`minc_keras.predict.inputs.output_names`).
    clobber, save_probabilities, batch_size, tta
        As for :func:`minc_keras.predict.runner.predict_scans`.
    quiet : bool
        No progress bar.
    on_done : callable
        Called in this process with the ``volumes.csv`` row of each scan, as it completes.
    scans_per_process : int
        Scans per child process.

    Returns
    -------
    list of (Path, str)
        The scans that could not be segmented, with the reason.

    Raises
    ------
    MincKerasError
        If the model cannot be loaded (raised in the child, re-raised here), or a child
        process dies (:class:`~minc_keras.core.errors.ProcessDiedError`).
    """
    segment = functools.partial(
        segment_on_worker, model_path=str(Path(model_path).resolve()),
        out_dir=str(Path(out_dir).resolve()), clobber=clobber,
        save_probabilities=save_probabilities, batch_size=batch_size, tta=tta)
    context = multiprocessing.get_context("spawn")  # a clean child: no copy of our state
    failures: list[tuple[Path, str]] = []
    bar = progress(range(len(scans) + 1), desc="segmenting", unit="scan", disable=quiet)
    next(bar)  # tqdm counts an item done when the next is asked for
    for start in range(0, len(scans), scans_per_process):
        chunk = scans[start:start + scans_per_process]
        pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_child,
                                   initargs=(logging.getLogger().getEffectiveLevel(),))
        try:
            _result(pool.submit(_load_model, segment.keywords["model_path"], tta), chunk[0])
            futures = [pool.submit(segment, str(scan), name=(names or {}).get(scan))
                       for scan in chunk]
            for scan, future in zip(chunk, futures, strict=True):
                outcome = _result(future, scan)
                next(bar, None)
                take_outcome(scan, outcome, on_done, failures)
        finally:  # on an error or Ctrl-C, the scans not started are not started
            pool.shutdown(wait=True, cancel_futures=True)
    return failures
