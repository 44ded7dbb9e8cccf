"""End to end with a label set of many structures: 40 sparse codes named by a table."""

import keras
import numpy as np
import pandas as pd
from synthetic import (
    XYZ_AFFINE,
    make_subject,
    sparse_codes,
    write_sparse_dataset,
    write_structure_table,
)

from minc_keras.cli.main import main
from minc_keras.io import Volume, read_volume, write_volume
from minc_keras.models.info import read_info


def test_forty_sparse_structures_train_predict_and_name_the_volumes(tmp_path):
    codes = sparse_codes(40)
    source = write_sparse_dataset(tmp_path / "source", codes, n_subjects=4)
    table = write_structure_table(tmp_path / "structures.tsv", codes)
    target = tmp_path / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.5", "0.25", "--epochs", "1",
                 "--batch-size", "8", "--augment", "--label-table", str(table),
                 "--quiet"]) == 0
    model_path = target / "model" / "model.keras"
    info = read_info(keras.saving.load_model(model_path))
    assert info.class_values == [0, *codes]
    names = ["background", *(f"{'Left' if k % 2 == 0 else 'Right'} S{k // 2}"
                             for k in range(40))]
    assert info.class_names == names
    assert info.mirror_classes == [0, *(k + 1 + (1 if k % 2 == 0 else -1) for k in range(40))]
    image, _ = make_subject(31)
    scan = write_volume(Volume(image, XYZ_AFFINE.copy()), tmp_path / "new" / "s31.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_path), "-o", str(out), "--quiet", "--tta",
                 "--save-probabilities", "Left S3,Right S3", str(scan)]) == 0
    volumes = pd.read_csv(out / "volumes.csv")
    assert [c for c in volumes.columns if c.endswith("_ml")] == [
        *(f"{name}_ml" for name in names[1:]), "total_ml"]
    labels = read_volume(out / "s31_dseg.nii.gz", label=True)
    assert set(np.unique(labels.data)) <= {0, *codes}
    assert sorted(p.name for p in out.glob("*_probseg.nii.gz")) == [
        "s31_label-LeftS3_probseg.nii.gz", "s31_label-RightS3_probseg.nii.gz"]
