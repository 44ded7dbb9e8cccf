"""Discovery of scans and labels: layouts, patterns, pairing and the errors a user can cause.

Discovery only looks at names, so the trees hold empty files.
"""

import os
from pathlib import Path

import pytest

from minc_keras.core.errors import DatasetError, UsageError
from minc_keras.data.discover import (
    IMAGE_SUFFIXES,
    Discovery,
    Scan,
    discover,
    match_pattern,
    parse_entities,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def touch(root: Path, *names: str) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def workshop_tree(root: Path, subjects=("01", "02", "03"), sessions=("01",), suffix=".mnc"):
    for sub in subjects:
        for ses in sessions:
            stem = f"sub-{sub}/sub-{sub}_task-01_ses-{ses}"
            touch(root, f"{stem}_T1w_anat_rsl{suffix}", f"{stem}_variant-seg_rsl{suffix}")
    return root


# -- pure functions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pattern", "expected"),
    [
        ("sub-01_T1w_anat_rsl.mnc", "T1w_anat", True),
        ("sub-01_T1w_anat_rsl.mnc", "*T1w_anat*", True),
        ("sub-01_T1w_anat_rsl.mnc", "T1w_anat*", False),  # a glob matches the whole name
        ("sub-01_T1w_anat_rsl.mnc", "t1w_anat", False),  # case-sensitive
        ("sub-01_variant-seg_rsl.mnc", "*seg*", True),
        ("sub-01_variant-seg_rsl.mnc", "sub-0?_variant-*", True),
        ("sub-01_variant-seg_rsl.mnc", "sub-0[23]_*", False),
        ("sub-01_variant-seg_rsl.mnc", "sub-0[1]_*", True),
        ("sub-01_ses-01_T1w.nii.gz", "seg", False),  # "ses" is not "seg"
    ],
)
def test_match_pattern(name, pattern, expected):
    assert match_pattern(name, pattern) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("sub-01_task-01_ses-01_T1w_anat_rsl.mnc", {"sub": "01", "task": "01", "ses": "01"}),
        (
            "sub-01_task-01_ses-01_variant-seg_rsl.mnc.gz",
            {"sub": "01", "task": "01", "ses": "01", "variant": "seg"},
        ),
        ("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", {"sub": "01", "ses": "1"}),
        ("sub-01/ses-1/anat/sub-01_T1w.nii", {"sub": "01", "ses": "1"}),
        ("sub-07/ses-2/anat/run-3_T1w.nii.gz", {"run": "3", "sub": "07", "ses": "2"}),
        ("sub-07/ses-2/sub-08_T1w.mnc", {"sub": "08", "ses": "2"}),  # the name wins
        (
            "derivatives/fast/sub-01/anat/sub-01_desc-fast_dseg.nii.gz",
            {"sub": "01", "desc": "fast"},
        ),
        ("scans/brain_01.mnc", {}),
        ("sub-01_T1w_sub-02.mnc", {"sub": "01"}),  # the first occurrence wins
    ],
)
def test_parse_entities(path, expected):
    assert parse_entities(path) == expected
    assert parse_entities(Path(path)) == expected


def test_image_suffixes():
    assert IMAGE_SUFFIXES == (".mnc", ".mnc.gz", ".nii", ".nii.gz")


# -- layouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
@pytest.mark.parametrize(("input_str", "label_str"), [("T1w_anat", "seg"), ("*T1w_anat*", "*seg*")])
def test_workshop_layout(tmp_path, suffix, input_str, label_str):
    workshop_tree(tmp_path, suffix=suffix)
    found = discover(tmp_path, input_str, label_str)
    assert [s.subject for s in found.scans] == ["sub-01", "sub-02", "sub-03"]
    assert {s.session for s in found.scans} == {"ses-01"}
    for scan in found.scans:
        assert isinstance(scan, Scan)
        assert scan.input.is_absolute()
        assert scan.input.name.startswith(f"{scan.subject}_task-01_ses-01_T1w_anat_rsl")
        assert scan.label.name == f"{scan.subject}_task-01_ses-01_variant-seg_rsl{suffix}"
        assert scan.key == (("sub", scan.subject[4:]), ("ses", "01"), ("task", "01"))
    assert found.unmatched_inputs == found.unmatched_labels == []
    assert found.describe_unmatched() == []


def test_multi_session_subjects_sorted(tmp_path):
    workshop_tree(tmp_path, subjects=("02", "01"), sessions=("02", "01", "03"))
    found = discover(tmp_path, "*T1w_anat*", "*seg*")
    assert [(s.subject, s.session) for s in found.scans] == [
        (f"sub-{a}", f"ses-{b}") for a in ("01", "02") for b in ("01", "02", "03")
    ]
    for scan in found.scans:
        assert scan.input.name.replace("T1w_anat", "variant-seg") == scan.label.name


def test_bids_layout_labels_beside_and_in_derivatives(tmp_path):
    touch(
        tmp_path,
        "dataset_description.json",
        "participants.tsv",
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.json",
        "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_dseg.nii.gz",  # beside the image
        "derivatives/fast/sub-01/ses-1/anat/sub-01_ses-1_dseg.nii.gz",
        "derivatives/fast/sub-01/ses-2/anat/sub-01_ses-2_desc-fast_dseg.nii.gz",
        "derivatives/fast/dataset_description.json",
    )
    found = discover(tmp_path, "_T1w", "_dseg")
    pairs = [(s.subject, s.session, s.label.relative_to(tmp_path).as_posix()) for s in found.scans]
    assert pairs == [
        ("sub-01", "ses-1", "derivatives/fast/sub-01/ses-1/anat/sub-01_ses-1_dseg.nii.gz"),
        (
            "sub-01",
            "ses-2",
            "derivatives/fast/sub-01/ses-2/anat/sub-01_ses-2_desc-fast_dseg.nii.gz",
        ),
        ("sub-02", "ses-1", "sub-02/ses-1/anat/sub-02_ses-1_dseg.nii.gz"),
    ]
    assert all(s.input.name.endswith("_T1w.nii.gz") for s in found.scans)


def test_entities_from_folders_when_not_in_name(tmp_path):
    touch(
        tmp_path,
        "sub-01/ses-1/anat/T1w.nii.gz",
        "sub-01/ses-1/anat/dseg.nii.gz",
        "sub-01/ses-2/anat/T1w.nii.gz",
        "sub-01/ses-2/anat/dseg.nii.gz",
    )
    found = discover(tmp_path, "T1w", "dseg")
    assert [(s.subject, s.session) for s in found.scans] == [
        ("sub-01", "ses-1"),
        ("sub-01", "ses-2"),
    ]


def test_run_and_acq_keep_scans_apart(tmp_path):
    touch(
        tmp_path,
        "sub-01/anat/sub-01_run-1_T1w.nii.gz",
        "sub-01/anat/sub-01_run-2_T1w.nii.gz",
        "sub-01/anat/sub-01_run-1_dseg.nii.gz",
        "sub-01/anat/sub-01_run-2_dseg.nii.gz",
        "sub-01/anat/sub-01_acq-fast_T1w.nii.gz",
    )
    found = discover(tmp_path, "T1w", "dseg")
    assert [(s.input.name, s.label.name) for s in found.scans] == [
        ("sub-01_run-1_T1w.nii.gz", "sub-01_run-1_dseg.nii.gz"),
        ("sub-01_run-2_T1w.nii.gz", "sub-01_run-2_dseg.nii.gz"),
    ]
    assert [p.name for p in found.unmatched_inputs] == ["sub-01_acq-fast_T1w.nii.gz"]


def test_oasis_like_layout_and_the_other_label(tmp_path):
    for sub in ("OAS10061", "OAS10080"):
        touch(
            tmp_path,
            *(
                f"sub-{sub}/sub-{sub}_{kind}.mnc"
                for kind in ("T1w_anat", "variant-seg", "variant-manual")
            ),
        )
    for label_str, kind in (("variant-seg", "variant-seg"), ("manual", "variant-manual")):
        found = discover(tmp_path, "T1w_anat", label_str)
        assert [s.subject for s in found.scans] == ["sub-OAS10061", "sub-OAS10080"]
        assert [s.label.name for s in found.scans] == [
            f"sub-OAS10061_{kind}.mnc",
            f"sub-OAS10080_{kind}.mnc",
        ]
        assert {s.session for s in found.scans} == {""}


def test_file_matching_both_patterns(tmp_path):
    # the label pattern is the narrower one: the label matches both
    touch(
        tmp_path,
        "sub-01/sub-01_T1w.mnc",
        "sub-01/sub-01_T1w_seg.mnc",
        "sub-02/sub-02_T1w.mnc",
        "sub-02/sub-02_T1w_seg.mnc",
    )
    found = discover(tmp_path, "T1w", "T1w_seg")
    assert [(s.input.name, s.label.name) for s in found.scans] == [
        ("sub-01_T1w.mnc", "sub-01_T1w_seg.mnc"),
        ("sub-02_T1w.mnc", "sub-02_T1w_seg.mnc"),
    ]
    # a subject whose id holds the label pattern: its input matches both and stays an input
    touch(tmp_path, "sub-seg03/sub-seg03_T1w_anat_rsl.mnc", "sub-seg03/sub-seg03_variant-seg.mnc")
    found = discover(tmp_path, "*T1w*", "*seg*")
    scan = next(s for s in found.scans if s.subject == "sub-seg03")
    assert scan.input.name == "sub-seg03_T1w_anat_rsl.mnc"
    assert scan.label.name == "sub-seg03_variant-seg.mnc"


def test_prediction_only_discovery(tmp_path):
    workshop_tree(tmp_path)
    touch(tmp_path, "loose/brain_a.nii.gz", "loose/deeper/brain_a.nii.gz", "brain_b.mnc")
    found = discover(tmp_path, "*T1w*", None)
    assert [s.subject for s in found.scans] == ["sub-01", "sub-02", "sub-03"]
    assert all(s.label is None for s in found.scans)
    with pytest.raises(DatasetError, match="two inputs claim sub-01"):
        discover(tmp_path, None)  # every image is an input: image and seg share a key
    everything = discover(tmp_path / "loose", None)
    assert [s.subject for s in everything.scans] == ["brain_a", "deeper_brain_a"]
    assert discover(tmp_path, "brain").scans[0].subject == "brain_b"


def test_skips_hidden_other_suffixes_and_temp_files(tmp_path):
    workshop_tree(tmp_path, subjects=("01",))
    touch(
        tmp_path,
        ".hidden/sub-02/sub-02_task-01_ses-01_T1w_anat_rsl.mnc",
        "sub-01/.sub-01_task-01_ses-01_T1w_anat_rsl.mnc.abc123.tmp.mnc",
        "sub-01/sub-01_task-01_ses-01_T1w_anat_rsl.json",
        "sub-01/sub-01_task-01_ses-01_T1w_anat_rsl.mnc.bak",
    )
    found = discover(tmp_path, "T1w_anat", "seg")
    assert [s.subject for s in found.scans] == ["sub-01"]
    assert found.unmatched_inputs == []


def test_exclude_output_folder_inside_source(tmp_path):
    workshop_tree(tmp_path)
    touch(tmp_path, "run1/predict/test/sub-01_dseg.mnc")
    found = discover(tmp_path, "T1w_anat", "seg")
    assert found.unmatched_labels == [tmp_path / "run1/predict/test/sub-01_dseg.mnc"]
    found = discover(tmp_path, "T1w_anat", "seg", exclude=[tmp_path / "run1", tmp_path / "no"])
    assert len(found.scans) == 3
    assert found.unmatched_labels == []


# -- links ---------------------------------------------------------------------------------------


def test_symlink_loop_does_not_hang(tmp_path):
    workshop_tree(tmp_path)
    os.symlink(tmp_path, tmp_path / "loop")
    os.symlink(tmp_path / "sub-01", tmp_path / "sub-01" / "again")
    found = discover(tmp_path, "*T1w_anat*", "*seg*")
    assert len(found.scans) == 3
    assert all("loop" not in s.input.parts for s in found.scans)


def test_linked_subject_folder_is_searched_once(tmp_path):
    data, source = tmp_path / "data", tmp_path / "source"
    workshop_tree(data)
    workshop_tree(source, subjects=("04",))
    os.symlink(data / "sub-01", source / "sub-01")
    os.symlink(tmp_path / "missing.mnc", source / "dangling.mnc")
    found = discover(source, "T1w_anat", "seg")
    assert [s.subject for s in found.scans] == ["sub-01", "sub-04"]
    assert found.scans[0].input.parent == source / "sub-01"  # the link is kept, not resolved


# -- unmatched files and errors -------------------------------------------------------------------


def test_unmatched_inputs_and_labels_reported_by_name(tmp_path):
    workshop_tree(tmp_path)
    touch(
        tmp_path,
        "sub-04/sub-04_task-01_ses-01_T1w_anat_rsl.mnc",
        "sub-05/sub-05_task-01_ses-02_variant-seg_rsl.mnc",
    )
    found = discover(tmp_path, "T1w_anat", "seg")
    assert len(found.scans) == 3
    assert found.unmatched_inputs == [tmp_path / "sub-04/sub-04_task-01_ses-01_T1w_anat_rsl.mnc"]
    assert found.unmatched_labels == [tmp_path / "sub-05/sub-05_task-01_ses-02_variant-seg_rsl.mnc"]
    lines = found.describe_unmatched()
    assert len(lines) == 2
    assert lines[0].startswith("input sub-04/sub-04_task-01_ses-01_T1w_anat_rsl.mnc has no label")
    assert "sub-04, ses-01, task-01" in lines[0]
    assert lines[1].startswith(
        "label sub-05/sub-05_task-01_ses-02_variant-seg_rsl.mnc has no input"
    )


def test_describe_unmatched_without_source():
    lone = Path("/x/sub-01/sub-01_T1w.mnc")
    lines = Discovery([], [lone], []).describe_unmatched()
    assert lines == [
        f"input {lone} has no label with the same BIDS entities (sub-01); it is left out"
    ]


@pytest.mark.parametrize(
    ("which", "names", "flag"),
    [
        (
            "inputs",
            ("sub-01/sub-01_ses-01_T1w_anat_rsl.mnc", "sub-01/sub-01_ses-01_T1w_anat_n3.mnc"),
            "`input_str`",
        ),
        (
            "labels",
            ("sub-01/sub-01_ses-01_variant-seg.mnc", "sub-01/sub-01_ses-01_desc-x_dseg.mnc"),
            "`label_str`",
        ),
    ],
)
def test_duplicate_key_is_an_error(tmp_path, which, names, flag):
    touch(
        tmp_path,
        "sub-01/sub-01_ses-01_T1w_anat_rsl.mnc",
        "sub-01/sub-01_ses-01_variant-seg.mnc",
        *names,
    )
    with pytest.raises(DatasetError) as info:
        discover(tmp_path, "T1w_anat", "seg")
    message = str(info.value)
    assert f"two {which} claim sub-01, ses-01" in message
    assert all(Path(n).as_posix() in message for n in names)
    assert f"make {flag} more specific" in message


def test_missing_source(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere does not exist; pass `source`"):
        discover(tmp_path / "nowhere", "T1w", "seg")


def test_source_is_a_file(tmp_path):
    touch(tmp_path, "a.mnc")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        discover(tmp_path / "a.mnc", "T1w", "seg")


def test_source_without_images(tmp_path):
    touch(tmp_path, "notes.txt", "sub-01/sub-01_T1w.json", ".hidden/sub-01_T1w.mnc")
    with pytest.raises(DatasetError, match=r"holds no \.mnc, \.mnc\.gz, \.nii, \.nii\.gz files"):
        discover(tmp_path, "T1w", "seg")


def test_input_pattern_matching_nothing_lists_names(tmp_path):
    workshop_tree(tmp_path)
    with pytest.raises(DatasetError) as info:
        discover(tmp_path, "*T2w*", "seg")
    message = str(info.value)
    assert "`input_str` '*T2w*' matches none of the 6 image files" in message
    assert "sub-01_task-01_ses-01_T1w_anat_rsl.mnc" in message
    assert "and 1 more" in message


def test_label_pattern_matching_nothing(tmp_path):
    workshop_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"`label_str` 'anat/seg' matches none.*not folders"):
        discover(tmp_path, "T1w", "anat/seg")


def test_no_pairs_names_the_unmatched_files(tmp_path):
    touch(tmp_path, "sub-01/sub-01_ses-01_T1w.mnc", "sub-02/sub-02_ses-01_seg.mnc")
    with pytest.raises(DatasetError) as info:
        discover(tmp_path, "T1w", "seg")
    message = str(info.value)
    assert "no input under" in message
    assert "sub-01/sub-01_ses-01_T1w.mnc" in message
    assert "sub-02/sub-02_ses-01_seg.mnc" in message


@pytest.mark.parametrize(("input_str", "label_str"), [("", "seg"), ("T1w", ""), ("seg", "seg")])
def test_bad_patterns_are_usage_errors(tmp_path, input_str, label_str):
    workshop_tree(tmp_path)
    with pytest.raises(UsageError):
        discover(tmp_path, input_str, label_str)


def test_relative_source(tmp_path, monkeypatch):
    workshop_tree(tmp_path / "output")
    monkeypatch.chdir(tmp_path)
    found = discover("output", "*T1w_anat*", "*seg*")
    assert found.scans[0].input == tmp_path / "output/sub-01/sub-01_task-01_ses-01_T1w_anat_rsl.mnc"


# -- real data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "suffix"), [("oasis-dev", ".mnc"), ("oasis-dev-nifti", ".nii.gz")]
)
@pytest.mark.parametrize(
    ("input_str", "label_str"), [("T1w_anat", "variant-seg"), ("*T1w_anat*", "*seg*")]
)
def test_oasis_dev_data(folder, suffix, input_str, label_str):
    source = SHARED_DATA / folder
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    found = discover(source, input_str, label_str)
    assert len(found.scans) == 15
    assert len({s.subject for s in found.scans}) == 15
    assert found.unmatched_inputs == found.unmatched_labels == []
    for scan in found.scans:
        assert scan.subject.startswith("sub-OAS")
        assert scan.session == ""
        assert scan.input.name == f"{scan.subject}_T1w_anat{suffix}"
        assert scan.label.name == f"{scan.subject}_variant-seg{suffix}"
