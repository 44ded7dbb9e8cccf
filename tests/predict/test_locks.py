"""The lock on volumes.csv: safe across processes, gone after a run, taken over when stale."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from synthetic import XYZ_AFFINE, make_subject

from minc_keras.cli.main import main
from minc_keras.core.atomic import file_lock
from minc_keras.io import Volume, write_volume


def test_no_lock_file_is_left_in_the_output_folder(cohort_model, tmp_path):
    scan = write_volume(Volume(make_subject(80)[0], XYZ_AFFINE.copy()), tmp_path / "s.nii.gz")
    assert main(["predict", "--model", str(cohort_model), "-o", str(tmp_path / "out"),
                 "--quiet", str(scan)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "s_dseg.json", "s_dseg.nii.gz", "volumes.csv"]


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    lock = tmp_path / ".volumes.csv.lock"
    # a process that takes the lock and dies without releasing it (as a SIGKILL leaves it)
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from minc_keras.core.atomic import file_lock
        with file_lock({str(lock)!r}):
            os._exit(0)
    """)], check=True)
    assert lock.exists()
    with file_lock(lock, timeout=20):
        pass
    assert not lock.exists()


def test_concurrent_writers_lose_no_update(tmp_path):
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    adder = textwrap.dedent(f"""
        from pathlib import Path
        from minc_keras.core.atomic import file_lock
        path = Path({str(counter)!r})
        for _ in range(60):
            with file_lock(path.with_name(".counter.lock")):
                path.write_text(str(int(path.read_text()) + 1))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", adder]) for _ in range(3)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0]
    assert counter.read_text() == "180"
    assert not (tmp_path / ".counter.lock").exists()
