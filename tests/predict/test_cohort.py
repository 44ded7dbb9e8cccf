"""`predict --scheduler dask`: a cohort in parallel on a LocalCluster of 2 workers."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from minc_keras.cli.main import main

pytest.importorskip("dask.distributed", reason="needs dask.distributed")


def _predict(model_path, out, folder, *extra):
    return main(["predict", "--model", str(model_path), "-o", str(out), "--quiet", str(folder),
                 *extra])


def test_dask_gives_the_serial_files_and_survives_a_bad_scan(cohort_model, cohort_scans, tmp_path,
                                                              capsys):
    assert _predict(cohort_model, tmp_path / "serial", cohort_scans) == 2  # the bad scan fails
    capsys.readouterr()
    environ = dict(os.environ)
    assert _predict(cohort_model, tmp_path / "dask", cohort_scans, "--scheduler", "dask",
                    "--workers", "2") == 2
    # Dask sets OMP_NUM_THREADS=1 for its workers; our own processes keep their threads
    assert dict(os.environ) == environ
    captured = capsys.readouterr()
    assert "segmented 7 scans" in captured.out
    assert "sub-99_T1w.nii.gz" in captured.err  # listed as failed, the others done
    serial = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == serial
    # two scans named sub-40_T1w, told apart by their folders
    assert "site-b_sub-40_T1w_dseg.nii.gz" in serial
    assert f"{cohort_scans.name}_sub-40_T1w_dseg.nii.gz" in serial
    for name in serial:
        if name.endswith(".nii.gz"):  # NIfTI output has no time stamps: byte for byte
            assert (tmp_path / "dask" / name).read_bytes() == \
                (tmp_path / "serial" / name).read_bytes(), name
    table = pd.read_csv(tmp_path / "dask" / "volumes.csv").drop(columns="output")
    pd.testing.assert_frame_equal(
        table, pd.read_csv(tmp_path / "serial" / "volumes.csv").drop(columns="output"))

    # a re-run (say after the job was killed) leaves out the scans already done
    assert _predict(cohort_model, tmp_path / "dask", cohort_scans, "--scheduler", "dask",
                    "--workers", "2") == 2
    out = capsys.readouterr().out
    assert "left out 7 scans" in out
    assert "segmented 0 scans" in out


def test_unreachable_scheduler_is_a_clear_error(cohort_model, cohort_scans, tmp_path, capsys):
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = _predict(cohort_model, tmp_path / "out", cohort_scans, "--scheduler", "dask",
                        "--scheduler-address", "tcp://127.0.0.1:1")
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err
    assert "Traceback" not in err
