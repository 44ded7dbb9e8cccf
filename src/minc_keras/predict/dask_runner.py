"""Cohort inference on Dask: segment many scans in parallel on a ``dask.distributed`` cluster.

A local cluster (``--workers N`` processes, one thread each, each replaced after
:data:`WORKER_LIFETIME`) is started by default; give ``--scheduler-address
tcp://host:8786`` or ``--scheduler-file PATH`` to use an existing cluster instead, for
example one that ``dask-jobqueue`` or ``dask-mpi`` started. A worker that dies on a scan
(``KilledWorker``) fails that scan; the others go on. Each worker process loads the model
once and segments scans with exactly the code of the serial path
(:mod:`minc_keras.predict.worker`), so the outputs are the same files; a scan that fails
is reported and the others go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from minc_keras.core.errors import UsageError
from minc_keras.core.progress import progress
from minc_keras.predict.worker import segment_on_worker, take_outcome

log = logging.getLogger(__name__)


#: Each local worker process is replaced after about this long (bounds memory creep, as
#: the serial runner's process recycling does); a scan under way is finished elsewhere.
WORKER_LIFETIME = "30 minutes"

#: Spread of the workers' lifetimes, so they are not all replaced at once.
WORKER_LIFETIME_STAGGER = "5 minutes"


def import_distributed():
    """``dask.distributed``, or one sentence naming the extra to install."""
    try:
        import dask.distributed
    except ImportError:
        raise UsageError('`scheduler` dask needs dask.distributed, which is not installed; '
                         'install it with pip install "minc-keras[dask]"') from None
    return dask.distributed


def _connect(workers: int, address: str | None, scheduler_file: str | None = None):
    """A client of the cluster at ``address`` or ``scheduler_file``, or of a new local one.

    Returns the client and the local cluster to close afterwards (None for a running one).
    """
    distributed = import_distributed()
    if address and scheduler_file:
        raise UsageError("give `scheduler_address` or `scheduler_file`, not both")
    if address or scheduler_file:
        where = f"at {address}" if address else f"of {scheduler_file}"
        if scheduler_file and not Path(scheduler_file).is_file():
            raise UsageError(f"the Dask scheduler file {scheduler_file} does not exist; start "
                             "the cluster first (dask-jobqueue, dask-mpi) or check the path")
        try:
            # how long to try: Dask's setting distributed.comm.timeouts.connect
            if scheduler_file:
                return distributed.Client(scheduler_file=scheduler_file), None
            return distributed.Client(address), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler {where} ({exc}); check it and "
                             "that the scheduler is running") from None
    if workers < 1:
        raise UsageError(f"`workers` {workers} is below 1; give the number of worker processes")
    # one thread per worker process, in the workers' environment only: Dask also sets
    # OMP_NUM_THREADS=1 and the like in ours, which later subprocesses would inherit
    environ = dict(os.environ)
    try:
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            env={"OMP_NUM_THREADS": environ.get("OMP_NUM_THREADS", "1")},
            lifetime=WORKER_LIFETIME, lifetime_stagger=WORKER_LIFETIME_STAGGER,
            lifetime_restart=True)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    return distributed.Client(cluster), cluster


def _outcome(future, scan: Path) -> tuple[str, dict | str]:
    """The future's outcome; a worker that died on the scan fails it in one sentence."""
    try:
        return future.result()
    except Exception as exc:
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError

        if isinstance(exc, KilledWorker | CommClosedError):
            return "failed", (f"the Dask worker segmenting it died (killed, or out of memory?) "
                              f"({type(exc).__name__}); rerun the same command to go on")
        raise


def segment_on_dask(model_path: Path, scans: list[Path], out_dir: Path, *,
                    names: dict[Path, str] | None = None, clobber: bool,
                    save_probabilities: bool | list[str], batch_size: int, tta: bool, workers: int,
                    address: str | None, quiet: bool, on_done: Callable[[dict], None],
                    scheduler_file: str | None = None) -> list[tuple[Path, str]]:
    """Segment ``scans`` on a Dask cluster; return the failures.

    Parameters
    ----------
    model_path : Path
        The model, readable from every worker (a shared file system on a cluster).
    scans : list of Path
        Scans to segment, readable from every worker.
    out_dir : Path
        Where the outputs go, writable from every worker.
    names : dict, optional
        The name each scan's outputs take (:func:`minc_keras.predict.inputs.output_names`).
    clobber, save_probabilities, batch_size, tta
        As for :func:`minc_keras.predict.runner.predict_scans`.
    workers : int
        Worker processes of the local cluster (ignored with ``address``).
    address : str, optional
        Address of a running scheduler, such as ``tcp://10.0.0.5:8786``.
    scheduler_file : str, optional
        The scheduler file of a running cluster, as dask-jobqueue or ``dask-mpi
        --scheduler-file`` write it.
    quiet : bool
        No progress bar.
    on_done : callable
        Called in this process with the ``volumes.csv`` row of each scan, as it completes.
    """
    as_completed = import_distributed().as_completed
    options = {"model_path": str(Path(model_path).resolve()), "out_dir": str(out_dir.resolve()),
               "clobber": clobber, "save_probabilities": save_probabilities,
               "batch_size": batch_size, "tta": tta, "reuse_done": True}
    failures: list[tuple[Path, str]] = []
    client, cluster = _connect(workers, address, scheduler_file)
    try:
        log.info("segmenting %d scans on Dask (scheduler %s)", len(scans),
                 client.scheduler.address)
        futures = {client.submit(segment_on_worker, str(scan), pure=False,
                                 name=(names or {}).get(scan), **options): scan
                   for scan in scans}
        for future in progress(as_completed(futures), total=len(futures), desc="segmenting",
                               unit="scan", disable=quiet):
            take_outcome(futures[future], _outcome(future, futures[future]), on_done, failures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return failures
