"""A whole-head scan given to a model of skull-stripped brains is refused, not segmented.

A model records the non-zero volume of its training scans; ``predict`` refuses a scan far
above it with one sentence (exit 2), and the other scans of the run complete.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import XYZ_AFFINE, make_subject

from minc_keras.cli.main import main
from minc_keras.io import Volume, read_volume, write_volume
from minc_keras.preprocessing.plausibility import MAX_FOREGROUND_RATIO, foreground_ml

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _whole_head(seed: int) -> np.ndarray:
    """A synthetic brain inside a bright skull, with noisy air around it (no zero voxels)."""
    brain, _ = make_subject(seed)
    rng = np.random.default_rng(seed)
    head = np.pad(brain, 6)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in head.shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    head[(radius > 0.8) & (radius < 0.95) & (head == 0)] = 150.0  # skull and scalp
    return head + rng.uniform(1.0, 8.0, head.shape).astype(np.float32)  # scanner noise


def _read_info(model: Path):
    from minc_keras.inference.segmenter import load_segmenter

    return load_segmenter(model).info


def test_the_model_records_the_volume_of_its_training_scans(cohort_model):
    recorded = _read_info(cohort_model).foreground_ml
    assert recorded is not None
    assert 0 < recorded[0] <= recorded[1]


def test_a_whole_head_is_refused_and_the_brain_only_scan_beside_it_segmented(
        cohort_model, tmp_path, capsys):
    scans = tmp_path / "scans"
    write_volume(Volume(_whole_head(60), XYZ_AFFINE.copy()), scans / "sub-60_T1w.nii.gz")
    write_volume(Volume(make_subject(61)[0], XYZ_AFFINE.copy()), scans / "sub-61_T1w.nii.gz")
    out = tmp_path / "out"
    code = main(["predict", "--model", str(cohort_model), "-o", str(out), str(scans), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "sub-60_T1w.nii.gz" in err
    assert "whole-head scan" in err
    assert "remove the skull first" in err
    assert not (out / "sub-60_T1w_dseg.nii.gz").exists()
    assert (out / "sub-61_T1w_dseg.nii.gz").exists()
    table = pd.read_csv(out / "volumes.csv")
    assert [Path(s).name for s in table["scan"]] == ["sub-61_T1w.nii.gz"]


def test_a_brain_only_scan_of_another_size_is_not_refused(cohort_model, tmp_path):
    # a larger brain than any the model saw, within the brain-to-brain spread
    brain, _ = make_subject(62, shape_xyz=(24, 28, 19))
    scan = tmp_path / "sub-62_T1w.nii.gz"
    write_volume(Volume(brain, XYZ_AFFINE.copy()), scan)
    recorded = _read_info(cohort_model).foreground_ml
    assert foreground_ml(brain, XYZ_AFFINE) <= MAX_FOREGROUND_RATIO * recorded[1]
    code = main(["predict", "--model", str(cohort_model), "-o", str(tmp_path / "out"),
                 str(scan), "--quiet"])
    assert code == 0


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data (the real dev scans) is absent")
def test_real_whole_heads_are_far_above_every_skull_stripped_dev_scan():
    def volume(path: Path) -> float:
        scan = read_volume(path)
        return foreground_ml(scan.data, scan.affine)

    brains = [volume(p) for p in sorted(DATA.glob("oasis-dev-nifti/*/*_T1w_anat.nii.gz"))]
    heads = [volume(p) for p in sorted(DATA.glob("mass-heads/*/*_T1w.nii.gz"))]
    assert len(brains) == 15
    assert len(heads) == 4
    # every dev brain passes a model trained on the others; every head is refused
    for k, brain in enumerate(brains):
        others = brains[:k] + brains[k + 1:]
        assert brain <= MAX_FOREGROUND_RATIO * max(others)
    assert min(heads) > MAX_FOREGROUND_RATIO * max(brains)
