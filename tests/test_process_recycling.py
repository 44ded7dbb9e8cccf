"""A cohort segmented in fresh child processes gives the files of one process, bad scans and all."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from synthetic import train_tiny_model, write_scan_folder

from minc_keras import process_recycling
from minc_keras.errors import MincKerasError
from minc_keras.predict import predict_scans

psutil = pytest.importorskip("psutil", reason="needs psutil (the test extra)")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("recycling-model"), epochs=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):  # a bad scan between good ones
    return write_scan_folder(tmp_path_factory.mktemp("recycling-cohort"), range(50, 54),
                             "sub-51b_T1w.nii.gz")


def test_chunks_in_fresh_processes_give_the_same_files(model_path, cohort, tmp_path,
                                                       monkeypatch):
    one = predict_scans(model_path, [str(cohort)], tmp_path / "one", quiet=True)
    pools = []

    class CountedPool(process_recycling.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(process_recycling, "ProcessPoolExecutor", CountedPool)
    fresh = predict_scans(model_path, [str(cohort)], tmp_path / "fresh", quiet=True,
                          scans_per_process=2)
    assert len(pools) == 3  # 5 scans, 2 per process
    assert [p.name for p, _ in fresh.failures] == ["sub-51b_T1w.nii.gz"]
    assert fresh.failures == one.failures  # the same sentence, from the child
    assert len(fresh.rows) == 4
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == names
    for name in names:
        if name.endswith(".nii.gz"):  # NIfTI output has no time stamps: byte for byte
            assert (tmp_path / "fresh" / name).read_bytes() == \
                (tmp_path / "one" / name).read_bytes(), name
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "fresh" / "volumes.csv").drop(columns="output"),
        pd.read_csv(tmp_path / "one" / "volumes.csv").drop(columns="output"))


def test_a_bad_model_is_refused_from_the_child(cohort, tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a model")
    with pytest.raises(MincKerasError, match=r"model\.keras"):
        predict_scans(bad, [str(cohort)], tmp_path / "out", quiet=True, scans_per_process=2)
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


def test_a_killed_child_is_one_sentence_and_a_rerun_goes_on(model_path, cohort, tmp_path):
    out = tmp_path / "out"
    outcome = {}

    def run():
        try:
            outcome["report"] = predict_scans(model_path, [str(cohort)], out, quiet=True,
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
    assert "--skip-existing" in str(outcome["error"])
    report = predict_scans(model_path, [str(cohort)], out, quiet=True, scans_per_process=2,
                           skip_existing=True)
    assert len(report.rows) + len(report.skipped) == 4
    assert len(pd.read_csv(out / "volumes.csv")) == 4
