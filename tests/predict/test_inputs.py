"""`predict` inputs: `@list.txt` files, and label maps found beside scans or named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import XYZ_AFFINE, make_subject

from minc_keras.cli.main import main
from minc_keras.core.errors import UsageError
from minc_keras.io import Volume, write_volume
from minc_keras.predict.inputs import find_inputs


def _scan(path, seed=70):
    return write_volume(Volume(make_subject(seed)[0], XYZ_AFFINE.copy()), path)


def _labels(path, seed=70):
    return write_volume(Volume(make_subject(seed)[1].astype(np.float32), XYZ_AFFINE.copy()), path)


def test_a_list_file_names_scans_relative_to_its_folder(tmp_path, monkeypatch):
    a = _scan(tmp_path / "lists" / "scans" / "a.nii.gz")
    b = _scan(tmp_path / "elsewhere" / "b.mnc")
    listing = tmp_path / "lists" / "cohort.txt"
    listing.write_text(f"# the cohort\n\nscans/a.nii.gz\n   \n{b}\n  # done\n")
    monkeypatch.chdir(tmp_path)  # relative to the list, not to the current folder
    found = find_inputs([f"@{listing.relative_to(tmp_path)}"])
    assert found.scans == [a.resolve(), b.resolve()]
    assert not found.searched  # listed files count as named


def test_a_list_naming_a_missing_file_is_a_clear_error(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("gone.nii.gz\n")
    with pytest.raises(UsageError, match=r"gone.nii.gz \(listed in .*l.txt\) is not a file"):
        find_inputs([f"@{listing}"])
    with pytest.raises(UsageError, match="cannot read the list of scans"):
        find_inputs([f"@{tmp_path / 'none.txt'}"])


def test_files_found_in_folders_and_globs_are_searched_named_ones_are_not(tmp_path):
    scan = _scan(tmp_path / "sub" / "s_T1w.nii.gz")
    seg = _labels(tmp_path / "sub" / "s_seg.mnc")
    found = find_inputs([str(tmp_path / "sub")])
    assert found.searched == {scan.resolve(), seg.resolve()}
    found = find_inputs([str(tmp_path / "sub"), str(seg)])  # named as well: named wins
    assert found.searched == {scan.resolve()}
    assert find_inputs([str(tmp_path / "sub" / "*.mnc")]).searched == {seg.resolve()}


def test_list_file_on_the_command_line(cohort_model, tmp_path, capsys):
    _scan(tmp_path / "in" / "a.nii.gz", 71)
    _scan(tmp_path / "in" / "b.nii.gz", 72)
    (tmp_path / "in" / "list.txt").write_text("a.nii.gz\n# b.nii.gz is left out\n")
    assert main(["predict", "--model", str(cohort_model), "-o", str(tmp_path / "out"),
                 "--quiet", f"@{tmp_path / 'in' / 'list.txt'}"]) == 0
    assert "segmented 1 scan into" in capsys.readouterr().out
    assert (tmp_path / "out" / "a_dseg.nii.gz").is_file()
    assert not (tmp_path / "out" / "b_dseg.nii.gz").exists()


def test_a_label_map_named_explicitly_still_fails(cohort_model, tmp_path, capsys):
    scan = _scan(tmp_path / "sub" / "s_T1w.nii.gz", 73)
    seg = _labels(tmp_path / "sub" / "s_seg.mnc", 73)
    assert main(["predict", "--model", str(cohort_model), "-o", str(tmp_path / "out"),
                 "--quiet", str(scan), str(seg)]) == 2
    out, err = capsys.readouterr()
    assert "s_seg.mnc: it holds 3 distinct values" in err
    assert "left out" not in out
    assert len(pd.read_csv(tmp_path / "out" / "volumes.csv")) == 1
