"""Fingerprints of the weights a fixed-seed training writes, to show a refactor changed none.

Trains through the command line on the tests' synthetic subjects (no real data needed), in
two configurations: the workshop's model and the ``default`` recipe's network with every
training feature that is deterministic on a CPU (three shared views, augmentation, simulated
atrophy, cosine schedule by steps, calibration; no time budget and no compiling, whose
outcome depends on the clock). Prints one SHA-256 per saved model file and per predicted
label volume (voxels and affine); run it before and after a change and compare the lines.

    python benchmarks/weights_fingerprint.py [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import minc_keras  # noqa: F401  (picks the default backend before keras loads)

CONFIGS = {
    "workshop": ["--epochs", "2", "--batch-size", "8", "--lr", "5e-3"],
    "recipe-default-deterministic": [
        "--recipe", "default", "--epochs", "2", "--time-budget", "0", "--no-jit-compile",
        "--schedule", "cosine"],
}


def _digest_model(path: Path) -> str:
    import keras

    model = keras.saving.load_model(path, compile=False)
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def _digest_labels(path: Path) -> str:
    """SHA-256 of a label file's voxels and affine (a gzip header holds a time stamp)."""
    from minc_keras.io import read_volume

    volume = read_volume(path, label=True)
    digest = hashlib.sha256(np.ascontiguousarray(volume.data).tobytes())
    digest.update(np.asarray(volume.affine, np.float64).tobytes())
    return digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs")
    args = parser.parse_args()
    from synthetic import write_dataset

    from minc_keras.cli.main import main as cli

    work = args.work or Path(tempfile.mkdtemp(prefix="fingerprint-"))
    source = write_dataset(work / "source", n_subjects=6, fmt="nii")
    for name, flags in CONFIGS.items():
        target = work / name
        code = cli(["--source", str(source), "--target", str(target), "--input-str",
                    "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.2", "--seed", "0",
                    "--predict", "all", "--quiet", "-v", "0", *flags])
        if code != 0:
            print(f"{name}: exit status {code}")
            return code
        for path in sorted((target / "model").glob("*.keras")):
            print(f"{name} {path.name} {_digest_model(path)}")
        for path in sorted((target / "predict" / "test").glob("*_dseg*")):
            print(f"{name} {path.name} {_digest_labels(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
