"""Fuzzing the volume readers: damaged files give our own error, nothing else.

Small valid volumes of each format (MINC2, gzipped MINC2, NIfTI, gzipped NIfTI, and
MINC1 where minc-tools can make one) are damaged by hypothesis: bytes overwritten,
runs of bytes deleted or inserted, the file truncated. Reading the result as an image
and as a label volume must either give a 3-D volume or raise
:class:`~minc_keras.core.errors.VolumeFormatError`, whose message names the file.

The test runs a short fuzz; a longer one, counting the inputs tried and the outcomes::

    python tests/test_fuzz.py --minutes 5
"""

from __future__ import annotations

import argparse
import collections
import gzip
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minc_keras.core.errors import VolumeFormatError
from minc_keras.io import Volume, read_volume, write_volume

#: Outcomes of every fuzzed read in this process: "volume" or the exception type's name.
OUTCOMES: collections.Counter = collections.Counter()


def make_seeds(folder: Path) -> dict[str, bytes]:
    """Small valid files, by suffix, whose bytes the fuzzer damages."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (6, 5, 4)).astype(np.int16)
    affine = np.diag([1.0, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-3.0, 4.0, 5.0]
    seeds = {}
    for suffix in (".mnc", ".nii", ".nii.gz"):
        path = write_volume(Volume(labels, affine), folder / f"seed{suffix}", clobber=True)
        seeds[suffix] = path.read_bytes()
    seeds[".mnc.gz"] = gzip.compress(seeds[".mnc"])
    if shutil.which("mincconvert"):  # MINC1 (NetCDF) through the MNI tools
        subprocess.run(["mincconvert", "-clobber", str(folder / "seed.mnc"),
                        str(folder / "seed1.mnc")], check=True, capture_output=True)
        seeds["minc1.mnc"] = (folder / "seed1.mnc").read_bytes()
    return seeds


def damage(data: bytes, edits: list[tuple[str, int, bytes]], cut: int | None) -> bytes:
    """Apply ``edits`` (kind, position as a share of the length in 1/1000, bytes) and ``cut``."""
    out = bytearray(data)
    for kind, where, chunk in edits:
        at = where * len(out) // 1000
        if kind == "overwrite":
            out[at:at + len(chunk)] = chunk
        elif kind == "insert":
            out[at:at] = chunk
        else:  # delete
            del out[at:at + len(chunk)]
    return bytes(out[:cut * len(out) // 1000] if cut is not None else out)


def check_read(path: Path) -> None:
    """Read ``path`` as image and as labels; only a volume or our error may come out."""
    for as_label in (False, True):
        try:
            volume = read_volume(path, label=as_label)
        except VolumeFormatError as exc:
            OUTCOMES["VolumeFormatError"] += 1
            message = str(exc)
        else:
            message = None
        if message is not None:
            assert str(path) in message, f"the message does not name the file: {message}"
            continue
        OUTCOMES["volume"] += 1
        assert volume.data.ndim == 3
        assert volume.affine.shape == (4, 4)


EDITS = st.lists(st.tuples(st.sampled_from(["overwrite", "insert", "delete"]),
                           st.integers(0, 1000), st.binary(min_size=1, max_size=16)),
                 min_size=1, max_size=6)
CUTS = st.none() | st.integers(0, 1000)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> SeedFiles:
    return SeedFiles(make_seeds(tmp_path_factory.mktemp("fuzz-seeds")))


class SeedFiles(dict):
    """The seed files, shown by name only in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<seeds {', '.join(sorted(self))}>"


def fuzz_once(seeds: dict[str, bytes], folder: Path, name: str, edits, cut) -> None:
    """Write one damaged copy of seed ``name`` and check how it reads."""
    suffix = ".mnc" if name == "minc1.mnc" else name
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(damage(seeds[name], edits, cut))
    check_read(path)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), edits=EDITS, cut=CUTS)
def test_damaged_files_give_only_our_error(seeds, tmp_path, data, edits, cut):
    name = data.draw(st.sampled_from(sorted(seeds)))
    fuzz_once(seeds, tmp_path, name, edits, cut)


def test_minc1_files_are_fuzzed_too(seeds):
    """Damaged MINC1 (NetCDF) files are among the fuzzed ones where minc-tools can make one."""
    if shutil.which("mincconvert") is None:
        pytest.skip("minc-tools not installed: no mincconvert to make a MINC1 seed, so damaged "
                    "MINC1 files are not fuzzed")
    assert "minc1.mnc" in seeds


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=4096), suffix=st.sampled_from([".mnc", ".nii", ".nii.gz",
                                                              ".mnc.gz"]))
def test_random_bytes_give_only_our_error(tmp_path, blob, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(blob)
    check_read(path)


def main() -> None:
    """Fuzz for ``--minutes``, then print how many inputs were tried and what came out."""
    parser = argparse.ArgumentParser(description="fuzz the volume readers")
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # nibabel logs the header problems it raises; counts only
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        found = make_seeds(folder)
        names = sorted(found)

        @settings(max_examples=200, deadline=None, database=None)
        @given(name=st.sampled_from(names), edits=EDITS, cut=CUTS)
        def batch(name, edits, cut):
            fuzz_once(found, folder, name, edits, cut)

        inputs, start = 0, time.monotonic()
        stop = start + args.minutes * 60
        while time.monotonic() < stop:
            before = sum(OUTCOMES.values())
            batch()  # each call is a fresh, randomly seeded hypothesis run
            inputs += (sum(OUTCOMES.values()) - before) // 2
        print(f"seeds: {', '.join(names)}")
        minutes = (time.monotonic() - start) / 60
        print(f"{inputs} damaged files read twice (image and labels) in {minutes:.1f} min; "
              f"outcomes: {dict(OUTCOMES)}")


if __name__ == "__main__":
    sys.exit(main())
