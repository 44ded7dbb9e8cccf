"""A cohort segmented in fresh child processes gives the files of one process, bad scans and all."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from minc_keras.core.errors import MincKerasError
from minc_keras.predict import processes as process_recycling
from minc_keras.predict.runner import predict_scans

psutil = pytest.importorskip("psutil", reason="needs psutil (the test extra)")


def test_chunks_in_fresh_processes_give_the_same_files(cohort_model, cohort_scans, tmp_path,
                                                       monkeypatch):
    one = predict_scans(cohort_model, [str(cohort_scans)], tmp_path / "one", quiet=True)
    pools = []

    class CountedPool(process_recycling.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(process_recycling, "ProcessPoolExecutor", CountedPool)
    fresh = predict_scans(cohort_model, [str(cohort_scans)], tmp_path / "fresh", quiet=True,
                          scans_per_process=2)
    assert len(pools) == 4  # 8 files, 2 per process
    assert [p.name for p, _ in fresh.failures] == ["sub-99_T1w.nii.gz"]
    assert fresh.failures == one.failures  # the same sentence, from the child
    assert len(fresh.rows) == 7
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == names
    assert "site-b_sub-40_T1w_dseg.nii.gz" in names  # the clashing name, told apart
    for name in names:
        if name.endswith(".nii.gz"):  # NIfTI output has no time stamps: byte for byte
            assert (tmp_path / "fresh" / name).read_bytes() == \
                (tmp_path / "one" / name).read_bytes(), name
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "fresh" / "volumes.csv").drop(columns="output"),
        pd.read_csv(tmp_path / "one" / "volumes.csv").drop(columns="output"))


def test_a_bad_model_is_refused_from_the_child(cohort_scans, tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a model")
    with pytest.raises(MincKerasError, match=r"model\.keras"):
        predict_scans(bad, [str(cohort_scans)], tmp_path / "out", quiet=True,
                      scans_per_process=2)
    assert not list((tmp_path / "out").glob("*_dseg*"))


def _pool_workers() -> list:
    """Our spawned pool workers (not multiprocessing's resource tracker)."""
    workers = []
    for child in psutil.Process().children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:
            pass
    return workers


def test_a_killed_child_is_one_sentence_and_a_rerun_goes_on(cohort_model, cohort_scans,
                                                            tmp_path):
    out = tmp_path / "out"
    outcome = {}

    def run():
        try:
            outcome["report"] = predict_scans(cohort_model, [str(cohort_scans)], out, quiet=True,
                                              scans_per_process=2)
        except MincKerasError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not (workers := _pool_workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers, "no child process was started"
    workers[0].kill()  # as the kernel's OOM killer would
    thread.join(300)
    assert "report" not in outcome
    assert "ended without finishing it" in str(outcome["error"])
    assert "`skip_existing`" in str(outcome["error"])  # the CLI prints it as --skip-existing
    report = predict_scans(cohort_model, [str(cohort_scans)], out, quiet=True, scans_per_process=2,
                           skip_existing=True)
    assert len(report.rows) + len(report.skipped) == 7
    assert len(pd.read_csv(out / "volumes.csv")) == 7
