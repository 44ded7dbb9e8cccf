"""``--devices``: a count that cannot work is one clear sentence, before any training.

Runs in a subprocess with the JAX backend and two host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``), as
``test_multi_device.py`` does: the checks are made where data-parallel training can run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax", reason="the data-parallel path needs JAX (pip install jax)")

SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from synthetic import write_dataset
    from minc_keras.cli.main import main

    root = Path({root!r})
    source = write_dataset(root / "source", n_subjects=4)
    target = root / "run"
    assert main(["prepare", "--source", str(source), "--target", str(target),
                 "--input-str", "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25",
                 "--quiet"]) == 0
    results = {{}}
    for name, flags in {cases!r}.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["train", "--target", str(target), "--epochs", "1", "--quiet", *flags])
        results[name] = {{"code": code, "err": err.getvalue(),
                         "model": (target / "model" / "model.keras").exists()}}
    print(json.dumps(results))
""")

CASES = {
    "uneven batch": (["--devices", "2", "--batch-size", "3"],
                     ["--batch-size 3 does not split evenly over 2 devices",
                      "give a multiple of 2"]),
    "too many devices": (["--devices", "3", "--batch-size", "6"],
                         ["--devices 3: 2 device(s) found", "give a number from 1 to 2"]),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("devices")
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    script = SCRIPT.format(tests=str(Path(__file__).parents[1]), root=str(root),
                           cases={name: flags for name, (flags, _) in CASES.items()})
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_a_device_count_that_cannot_work_is_refused(results, case):
    result = results[case]
    assert result["code"] == 2, result["err"]
    lines = [line for line in result["err"].splitlines() if line.startswith("minc-keras: error:")]
    assert len(lines) == 1, result["err"]
    for needle in CASES[case][1]:
        assert needle in lines[0]
    assert "Traceback" not in result["err"]
    assert not result["model"]  # refused before any training
