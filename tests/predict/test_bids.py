"""`predict --bids`: BIDS derivatives (names, folders, sidecars, dataset files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from synthetic import XYZ_AFFINE, make_subject

from minc_keras.cli.main import main
from minc_keras.io import Volume, write_volume

#: BIDS entities in the order the specification gives them (those a dseg/probseg may have).
ENTITY_ORDER = ["sub", "ses", "acq", "ce", "rec", "run", "space", "res", "den", "label", "desc"]


def _follows_entity_rules(relative: str) -> bool:
    """``relative`` against BIDS's own rules: folders, entity order, alphanumeric values."""
    parts = relative.split("/")
    name = parts[-1]
    match = re.fullmatch(r"((?:[a-z]+-[0-9A-Za-z]+_)+)(dseg|probseg)(\.nii\.gz|\.nii|\.mnc|\.json)",
                         name)
    if match is None:
        return False
    pairs = [p.split("-", 1) for p in match.group(1).rstrip("_").split("_")]
    keys = [k for k, _ in pairs]
    if keys[0] != "sub" or any(k not in ENTITY_ORDER for k in keys):
        return False
    if [ENTITY_ORDER.index(k) for k in keys] != sorted(ENTITY_ORDER.index(k) for k in keys):
        return False
    values = dict(pairs)
    folders = [f"sub-{values['sub']}"] + ([f"ses-{values['ses']}"] if "ses" in values else [])
    return parts[:-1] == [*folders, "anat"]


@pytest.fixture(scope="module")
def bids_run(cohort_model, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    scans = [write_volume(Volume(make_subject(seed)[0], XYZ_AFFINE.copy()), raw / path)
             for seed, path in ((60, "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"),
                                (61, "sub-02/anat/sub-02_acq-fast_run-2_T1w.mnc"))]
    out = tmp_path_factory.mktemp("derivatives") / "minckeras"
    assert main(["predict", "--model", str(cohort_model), "-o", str(out), "--quiet", "--bids",
                 "--save-probabilities", "--qc", str(raw)]) == 0
    return out, scans


def test_outputs_have_bids_derivative_names_and_folders(bids_run, cohort_model):
    out, _ = bids_run
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # named by the model's run folder (TARGET/model/model.keras), letters and digits only
    desc = re.sub("[^0-9A-Za-z]", "", Path(cohort_model).parent.parent.name)
    assert f"sub-01/ses-1/anat/sub-01_ses-1_desc-{desc}_dseg.nii.gz" in files
    assert f"sub-01/ses-1/anat/sub-01_ses-1_desc-{desc}_dseg.json" in files
    assert f"sub-01/ses-1/anat/sub-01_ses-1_label-label1_desc-{desc}_probseg.nii.gz" in files
    # MINC keeps the same names, with .mnc
    assert f"sub-02/anat/sub-02_acq-fast_run-2_desc-{desc}_dseg.mnc" in files
    assert "sub-01/figures/sub-01_ses-1_desc-qc.png" in files
    data = [f for f in files if "/anat/" in f]
    assert data
    assert [f for f in data if not _follows_entity_rules(f)] == []
    assert {"dataset_description.json", "dseg.tsv", "volumes.csv", "qc.html",
            ".bidsignore"} <= set(files)
    assert not [f for f in files if f.count("/") == 0 and f.endswith((".nii.gz", ".mnc"))]


def test_dataset_files_and_sidecars(bids_run):
    out, scans = bids_run
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "minc-keras"
    assert description["GeneratedBy"][0]["Version"]
    dseg = pd.read_csv(out / "dseg.tsv", sep="\t")
    assert list(dseg.columns) == ["index", "name"]
    assert dseg["index"].tolist() == [0, 1, 2]
    sidecar_path = next(out.glob("sub-01/ses-1/anat/*_dseg.json"))
    sidecar = json.loads(sidecar_path.read_text())
    source = (out / sidecar["Sources"][0]).resolve()  # relative to the derivative folder
    assert source == scans[0].resolve()
    assert sidecar["Model"]["SHA256"]
    assert len(sidecar["Model"]["SHA256"]) == 64
    assert len(pd.read_csv(out / "volumes.csv")) == 2


def test_names_pass_the_bids_schema(bids_run):
    """The names against the BIDS schema's derivative rules (what the validator checks)."""
    # the full validator (npm bids-validator) cannot be installed offline here; its schema
    # package can, and holds the filename rules it applies
    pytest.importorskip("bidsschematools", reason="pip install bids-validator (bidsschematools)"
                        " to check names against the BIDS schema")
    from bidsschematools import rules, schema

    loaded = schema.load_schema()
    patterns = [re.compile(rule["regex"])
                for rule in rules.regexify_filename_rules(loaded.rules.files.deriv, loaded, 2)]
    out, _ = bids_run
    for path in out.rglob("*"):
        relative = path.relative_to(out).as_posix()
        if path.is_file() and (relative.endswith((".nii.gz", ".json", ".tsv"))):
            if relative in ("dataset_description.json",):
                continue
            assert any(p.match(relative) for p in patterns), relative


def test_a_scan_not_named_as_bids_is_refused_with_bids(cohort_model, tmp_path, capsys):
    scan = write_volume(Volume(make_subject(62)[0], XYZ_AFFINE.copy()), tmp_path / "brain.nii")
    assert main(["predict", "--model", str(cohort_model), "-o", str(tmp_path / "out"),
                 "--quiet", "--bids", str(scan)]) == 2
    err = capsys.readouterr().err
    assert "is not named as BIDS names a scan" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
