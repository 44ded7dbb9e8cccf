"""Data-parallel training over two devices gives the loss curve of one device.

Runs in a subprocess with the JAX backend and two host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``), as a stand-in for two GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax", reason="the data-parallel path needs JAX (pip install jax)")

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from synthetic import write_dataset
    from minc_keras.cli.main import main

    root = Path({root!r})
    source = write_dataset(root / "source", n_subjects=6)
    curves = {{}}
    for devices in ("1", "2"):
        target = root / devices
        assert main(["prepare", "--source", str(source), "--target", str(target),
                     "--input-str", "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25",
                     "--quiet"]) == 0
        assert main(["train", "--target", str(target), "--epochs", "3", "--batch-size", "4",
                     "--lr", "1e-3", "--devices", devices, "--quiet"]) == 0
        curves[devices] = json.loads((target / "model" / "history.json").read_text())["loss"]
    print(json.dumps(curves))
""")


def test_two_devices_give_the_loss_curve_of_one(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    script = SCRIPT.format(tests=str(Path(__file__).parents[1]), root=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    curves = json.loads(result.stdout.strip().splitlines()[-1])
    # the same batches, each split in two and the gradients averaged: equal up to the
    # order of floating-point sums
    np.testing.assert_allclose(curves["2"], curves["1"], rtol=1e-4)
    assert curves["1"][-1] < curves["1"][0]


def test_devices_on_the_torch_backend_is_a_clear_error(tmp_path, capsys):
    from synthetic import write_dataset

    from minc_keras.cli.main import main

    source = write_dataset(tmp_path / "source", n_subjects=6)
    target = tmp_path / "run"
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--target", str(target), "--devices", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "KERAS_BACKEND=jax" in err
    assert "Traceback" not in err
