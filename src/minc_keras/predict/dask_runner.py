"""Cohort inference on Dask: segment many scans in parallel on a ``dask.distributed`` cluster.

A local cluster (``--workers N`` processes, one thread each) is started by default; give
``--scheduler-address tcp://host:8786`` to use an existing cluster instead, for example
one that ``dask-jobqueue`` started on SLURM nodes. Each worker process loads the model
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


def _connect(workers: int, address: str | None):
    """A client of the cluster at ``address``, or of a new local cluster of ``workers``.

    Returns the client and the local cluster to close afterwards (None with ``address``).
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("`scheduler` dask needs dask.distributed; install it with "
                         "pip install 'dask[distributed]'") from None
    if address:
        try:
            # how long to try: Dask's setting distributed.comm.timeouts.connect
            return Client(address), None
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {address} ({exc}); check the "
                             "address and that the scheduler is running") from None
    if workers < 1:
        raise UsageError(f"`workers` {workers} is below 1; give the number of worker processes")
    # one thread per worker process, in the workers' environment only: Dask also sets
    # OMP_NUM_THREADS=1 and the like in ours, which later subprocesses would inherit
    environ = dict(os.environ)
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None,
                               env={"OMP_NUM_THREADS": environ.get("OMP_NUM_THREADS", "1")})
    finally:
        os.environ.clear()
        os.environ.update(environ)
    return Client(cluster), cluster


def segment_on_dask(model_path: Path, scans: list[Path], out_dir: Path, *,
                    names: dict[Path, str] | None = None, clobber: bool,
                    save_probabilities: bool, batch_size: int, tta: bool, workers: int,
                    address: str | None, quiet: bool, on_done: Callable[[dict], None]
                    ) -> list[tuple[Path, str]]:
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
    quiet : bool
        No progress bar.
    on_done : callable
        Called in this process with the ``volumes.csv`` row of each scan, as it completes.
    """
    from dask.distributed import as_completed

    options = {"model_path": str(Path(model_path).resolve()), "out_dir": str(out_dir.resolve()),
               "clobber": clobber, "save_probabilities": save_probabilities,
               "batch_size": batch_size, "tta": tta}
    failures: list[tuple[Path, str]] = []
    client, cluster = _connect(workers, address)
    try:
        log.info("segmenting %d scans on Dask (scheduler %s)", len(scans),
                 client.scheduler.address)
        futures = {client.submit(segment_on_worker, str(scan), pure=False,
                                 name=(names or {}).get(scan), **options): scan
                   for scan in scans}
        for future in progress(as_completed(futures), total=len(futures), desc="segmenting",
                               unit="scan", disable=quiet):
            take_outcome(futures[future], future.result(), on_done, failures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return failures
