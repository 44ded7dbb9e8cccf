"""Atomic outputs: an interrupted write leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from minc_keras.core.atomic import atomic_output, file_lock
from minc_keras.core.errors import TargetError
from minc_keras.io import Volume, read_volume, write_volume


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_an_error_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")

    def interrupted_write():
        with atomic_output(path, clobber=True) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted_write()
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_a_full_disk_keeps_the_old_volume_and_says_so(tmp_path, monkeypatch):
    path = write_volume(Volume(np.ones((4, 5, 6), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(TargetError, match="free some space") as caught:
        write_volume(Volume(np.zeros((4, 5, 6), np.float32), np.eye(4)), path, clobber=True)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_kill_9_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old model")
    writer = textwrap.dedent(f"""
        import sys, time
        from minc_keras.core.atomic import atomic_output
        with atomic_output({str(path)!r}, clobber=True) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"new model, first half")
                handle.flush()
                print("writing", flush=True)
                time.sleep(60)
                handle.write(b" and second half")
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"writing\n"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert path.read_bytes() == b"old model"  # the half-written file never took its name


def _wait_for(path, process, seconds=120.0):
    """Wait until ``path`` exists; fail if ``process`` ends first or it takes ``seconds``."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the reader ended before {path.name}: {out.decode()} {err.decode()}")
        assert time.monotonic() < deadline, f"no {path.name} after {seconds:.0f} s"
        time.sleep(0.01)


def test_a_volume_written_while_another_process_reads_it_is_whole(tmp_path):
    """The reader is reading before the first rewrite, and sees both versions come and go."""
    path = tmp_path / "v.mnc"
    data = np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10)
    write_volume(Volume(data, np.eye(4)), path)
    ready, overlapped, stop = (tmp_path / name for name in ("ready", "overlapped", "stop"))
    reader = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        from minc_keras.io import read_volume
        data = np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10)
        versions = {{0.0: data, 1.0: data + 1}}
        read_volume({str(path)!r})
        open({str(ready)!r}, "w").close()  # reading: the writer may start
        reads, changes, last = 0, 0, None
        while not os.path.exists({str(stop)!r}):
            got = read_volume({str(path)!r}).data  # a partial file raises VolumeFormatError
            version = float(got.flat[0])
            if version not in versions or not np.array_equal(got, versions[version]):
                sys.exit(f"read {{reads}} saw a volume that was never written")
            reads += 1
            changes += last is not None and version != last
            last = version
            if changes >= 4 and not os.path.exists({str(overlapped)!r}):
                open({str(overlapped)!r}, "w").close()  # it read between rewrites
        print(reads, changes)
    """)
    process = subprocess.Popen([sys.executable, "-c", reader], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        _wait_for(ready, process)
        deadline = time.monotonic() + 120
        rewrites = 0
        # rewrite it again and again under the reader, until the reader has seen it change
        while rewrites < 50 or not overlapped.exists():
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the reader never saw the file change"
            write_volume(Volume(data + 1, np.eye(4)), path, clobber=True)
            write_volume(Volume(data, np.eye(4)), path, clobber=True)
            rewrites += 1
        stop.touch()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()  # no read ever saw a partial file
    reads, changes = map(int, out.split())
    assert reads > 0
    assert changes >= 4  # the reads overlapped the rewrites
    assert read_volume(path).data.shape == data.shape


def test_file_lock_serialises_read_modify_write_across_processes(tmp_path):
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    adder = textwrap.dedent(f"""
        from pathlib import Path
        from minc_keras.core.atomic import file_lock
        path = Path({str(counter)!r})
        for _ in range(100):
            with file_lock(path.with_name(".counter.lock")):
                path.write_text(str(int(path.read_text()) + 1))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", adder]) for _ in range(2)]
    assert [p.wait() for p in processes] == [0, 0]
    assert counter.read_text() == "200"  # no update lost to the other process


def test_file_lock_in_a_folder_that_cannot_be_written(tmp_path):
    with pytest.raises(TargetError, match="lock file"), file_lock(tmp_path / "no" / "x.lock"):
        pass


def test_outputs_get_the_usual_permissions_not_the_temporary_files(tmp_path):
    mask = os.umask(0o022)
    try:
        new = write_volume(Volume(np.ones((3, 4, 5), np.float32), np.eye(4)), tmp_path / "a.mnc")
        assert new.stat().st_mode & 0o777 == 0o644  # readable by the lab, as open() would make
        shared = tmp_path / "b.csv"
        shared.write_text("old")
        shared.chmod(0o664)
        with atomic_output(shared, clobber=True) as tmp:
            tmp.write_text("new")
        assert shared.stat().st_mode & 0o777 == 0o664  # a replaced file keeps its mode
    finally:
        os.umask(mask)
