"""`predict --scheduler dask`: a dead worker, a scheduler file, lifetimes, a missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from minc_keras.cli.main import main
from minc_keras.predict import dask_runner


def _predict(model_path, out, *inputs, extra=()):
    return main(["predict", "--model", str(model_path), "-o", str(out), "--quiet",
                 *map(str, inputs), "--scheduler", "dask", *extra])


def test_without_dask_the_extra_is_named_in_one_sentence(tmp_path):
    # dask.distributed made unimportable in a fresh interpreter: the user's venv without it
    code = textwrap.dedent(f"""
        import sys
        sys.modules["dask.distributed"] = None
        sys.modules["distributed"] = None
        from minc_keras.cli.main import main
        sys.exit(main(["predict", "--model", {str(tmp_path / "m.keras")!r}, "-o",
                       {str(tmp_path / "out")!r}, "--scheduler", "dask",
                       {str(tmp_path)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert 'pip install "minc-keras[dask]"' in done.stderr
    assert "Traceback" not in done.stderr
    assert "bug" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


pytest.importorskip("dask.distributed", reason="needs dask.distributed")


def test_the_local_cluster_restarts_its_workers(monkeypatch):
    seen = {}

    class FakeCluster:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    import dask.distributed

    monkeypatch.setattr(dask.distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(dask.distributed, "Client", lambda cluster: ("client", cluster))
    dask_runner._connect(2, None)
    assert seen["lifetime"] == dask_runner.WORKER_LIFETIME
    assert seen["lifetime_restart"] is True
    assert seen["lifetime_stagger"]


def test_a_killed_worker_fails_its_scan_in_one_sentence():
    from distributed import KilledWorker

    class Dead:
        def result(self):
            raise KilledWorker("segment_on_worker-1", "tcp://127.0.0.1:1", 0)

    status, reason = dask_runner._outcome(Dead(), "s.nii.gz")
    assert status == "failed"
    assert reason.startswith("the Dask worker segmenting it died")
    assert "\n" not in reason


def crash_on_some(path, **kwargs):
    """On a Dask worker: die on a scan named ``crash``, segment the others."""
    if "crash" in path:
        os._exit(1)
    from minc_keras.predict.worker import segment_on_worker

    return segment_on_worker(path, **kwargs)


def test_a_worker_that_dies_fails_that_scan_and_the_rest_go_on(cohort_model, cohort_scans,
                                                               tmp_path, monkeypatch, capsys):
    import cloudpickle
    import dask

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import it
    monkeypatch.setattr(dask_runner, "segment_on_worker", crash_on_some)
    scans = sorted(cohort_scans.glob("sub-4[0-2]_T1w.nii.gz"))
    crash = tmp_path / "in" / "crash_T1w.nii.gz"
    crash.parent.mkdir()
    crash.write_bytes(scans[0].read_bytes())
    try:
        # no retry of the crashing scan, and one task per worker at a time (so no other
        # scan was waiting on the worker that died)
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.scheduler.worker-saturation": 1.0}):
            code = _predict(cohort_model, tmp_path / "out", *scans, crash,
                            extra=("--workers", "2"))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert code == 2
    err = capsys.readouterr().err
    assert "crash_T1w.nii.gz: the Dask worker segmenting it died" in err
    assert "Traceback" not in err
    # a scan the dead worker held may fail with it (the same sentence), never otherwise;
    # the rerun the sentence asks for completes them
    done = {Path(p).name for p in pd.read_csv(tmp_path / "out" / "volumes.csv")["scan"]}
    for scan in scans:
        assert scan.name in done or f"{scan.name}: the Dask worker segmenting it died" in err
    assert _predict(cohort_model, tmp_path / "out", *scans, extra=("--workers", "2")) == 0
    done = {Path(p).name for p in pd.read_csv(tmp_path / "out" / "volumes.csv")["scan"]}
    assert done == {scan.name for scan in scans}


def test_a_cluster_named_by_its_scheduler_file(cohort_model, cohort_scans, tmp_path, capsys):
    from distributed import LocalCluster

    scheduler_file = tmp_path / "scheduler.json"
    assert _predict(cohort_model, tmp_path / "none", cohort_scans,
                    extra=("--scheduler-file", str(scheduler_file))) == 2
    err = capsys.readouterr().err
    assert f"the Dask scheduler file {scheduler_file} does not exist" in err
    scan = sorted(cohort_scans.glob("sub-4[0-2]_T1w.nii.gz"))[0]
    environ = dict(os.environ)  # Dask sets OMP_NUM_THREADS=1 and the like in ours
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          dashboard_address=None,
                          scheduler_kwargs={"scheduler_file": str(scheduler_file)}):
            assert scheduler_file.is_file()
            assert _predict(cohort_model, tmp_path / "out", scan,
                            extra=("--scheduler-file", str(scheduler_file))) == 0
    finally:  # later tests' subprocesses must not inherit one thread
        os.environ.clear()
        os.environ.update(environ)
    assert "segmented 1 scan" in capsys.readouterr().out
