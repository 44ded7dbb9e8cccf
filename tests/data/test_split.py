"""The subject-level split: counts, determinism, validation, and images.csv."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minc_keras.core.errors import DatasetError, OutputExistsError, UsageError
from minc_keras.data.discover import Scan
from minc_keras.data.split import (
    CATEGORIES,
    COLUMNS,
    assign_categories,
    check_ratios,
    read_split_csv,
    split_counts,
    summarise_split,
    write_split_csv,
)


def make_scans(n_subjects: int, *, seed: int = 7, root: Path = Path("/data")) -> list[Scan]:
    """``n_subjects`` subjects with 1 to 3 sessions each, in a shuffled order."""
    rng = np.random.default_rng(seed)
    scans = []
    for i in range(n_subjects):
        sub = f"{i:03d}"
        for j in range(1, int(rng.integers(1, 4)) + 1):
            stem = root / f"sub-{sub}" / f"sub-{sub}_ses-{j}"
            scans.append(
                Scan(
                    f"sub-{sub}",
                    f"ses-{j}",
                    Path(f"{stem}_T1w.mnc"),
                    Path(f"{stem}_seg.mnc"),
                    (("sub", sub), ("ses", str(j))),
                )
            )
    return [scans[k] for k in rng.permutation(len(scans))]


SCANS_300 = make_scans(300)

ratio_pairs = st.tuples(st.floats(0.01, 1.0), st.floats(0.0, 1.0)).filter(
    lambda r: r[0] + r[1] <= 1
)


def positive(ratios):
    train, validate = ratios
    test = 0.0 if abs(1 - train - validate) <= 1e-9 else 1 - train - validate
    return {"train": train, "validate": validate, "test": test}


# -- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "ratios", "expected"),
    [
        (20, (0.7, 0.15), (14, 3, 3)),
        (10, (0.7, 0.15), (7, 2, 1)),  # 7, 1.5, 1.5: tie broken train, validate, test
        (3, (0.7, 0.15), (1, 1, 1)),  # 2.1, .45, .45 -> 2, 1, 0 -> test takes one from train
        (4, (0.7, 0.15), (2, 1, 1)),  # 2.8, .6, .6 -> 3, 1, 0 -> test takes one from train
        (15, (0.7, 0.15), (11, 2, 2)),  # 10.5, 2.25, 2.25 -> 10, 2, 2 + 1 to train's .5
        (5, (0.8, 0.2), (4, 1, 0)),  # ratios sum to 1: no test
        (5, (0.7, 0.3), (4, 1, 0)),  # 0.7 + 0.3 != 1 in floats, but within 1e-9
        (2, (0.5, 0.0), (1, 0, 1)),  # two-way split, no validation
        (1, (1.0, 0.0), (1, 0, 0)),  # train only
        (100, (0.29, 0.3), (29, 30, 41)),  # 0.29 * 100 = 28.999999999999996 still counts as 29
    ],
)
def test_split_counts_by_hand(n, ratios, expected):
    assert tuple(split_counts(n, ratios).values()) == expected


@settings(max_examples=300, deadline=None)
@given(n=st.integers(3, 500), ratios=ratio_pairs)
def test_split_counts_properties(n, ratios):
    counts = split_counts(n, ratios)
    assert list(counts) == list(CATEGORIES)
    assert sum(counts.values()) == n
    shares = positive(ratios)
    needed = [c for c in CATEGORIES if shares[c] > 0]
    for c in CATEGORIES:
        assert counts[c] >= (1 if c in needed else 0)
        if shares[c] == 0:
            assert counts[c] == 0
    if all(shares[c] * n >= 1 for c in needed):  # no category had to be topped up
        for c in CATEGORIES:
            assert abs(counts[c] - shares[c] * n) < 1 + 1e-9
    else:  # topping up moves at most one subject per category
        for c in CATEGORIES:
            assert abs(counts[c] - shares[c] * n) < 3


@settings(max_examples=200, deadline=None)
@given(n=st.integers(3, 400), ratios=ratio_pairs)
def test_test_split_empty_only_when_ratios_sum_to_one(n, ratios):
    counts = split_counts(n, ratios)
    assert (counts["test"] == 0) == math.isclose(sum(ratios), 1, rel_tol=0, abs_tol=1e-9)


# -- assignment --------------------------------------------------------------------------------


def test_all_sessions_of_a_subject_in_one_category():
    categories = assign_categories(SCANS_300, (0.7, 0.15), seed=3)
    assert set(categories) == {s.subject for s in SCANS_300}
    assert set(categories.values()) == set(CATEGORIES)
    counts = {c: sum(v == c for v in categories.values()) for c in CATEGORIES}
    assert counts == split_counts(300, (0.7, 0.15)) == {"train": 210, "validate": 45, "test": 45}
    summary = summarise_split(SCANS_300, categories)
    assert {c: summary[c][0] for c in CATEGORIES} == counts
    assert sum(n for _, n in summary.values()) == len(SCANS_300)


def test_deterministic_and_independent_of_order():
    first = assign_categories(SCANS_300, (0.7, 0.15), seed=11)
    assert assign_categories(SCANS_300, (0.7, 0.15), seed=11) == first
    assert assign_categories(SCANS_300[::-1], (0.7, 0.15), seed=11) == first
    assert (
        assign_categories(sorted(SCANS_300, key=lambda s: str(s.input)), [0.7, 0.15], seed=11)
        == first
    )
    assert assign_categories(iter(SCANS_300), (0.7, 0.15), seed=11) == first


def test_different_seeds_differ():
    splits = [assign_categories(SCANS_300, (0.7, 0.15), seed=s) for s in range(5)]
    assert all(splits[i] != splits[j] for i in range(5) for j in range(i + 1, 5))


def test_known_split_for_seed_zero():
    scans = make_scans(5)
    categories = assign_categories(scans, (0.6, 0.2), seed=0)
    order = np.random.default_rng(0).permutation(5)
    expected = dict(
        zip([f"sub-{i:03d}" for i in order], ["train"] * 3 + ["validate"] + ["test"], strict=True)
    )
    assert categories == expected


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(3, 60),
    ratios=ratio_pairs,
    seed=st.integers(0, 2**32),
    order_seed=st.integers(0, 1000),
)
def test_assignment_properties(n, ratios, seed, order_seed):
    scans = make_scans(n, seed=order_seed)
    categories = assign_categories(scans, ratios, seed=seed)
    assert assign_categories(scans[::-1], ratios, seed=seed) == categories
    by_subject = {}
    for scan in scans:
        by_subject.setdefault(scan.subject, set()).add(categories[scan.subject])
    assert all(len(c) == 1 for c in by_subject.values())
    counts = {c: sum(v == c for v in categories.values()) for c in CATEGORIES}
    assert counts == split_counts(n, ratios)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratios", "match"),
    [
        ((0.7,), "two numbers"),
        ((0.7, 0.15, 0.15), "two numbers"),
        (0.7, "two numbers"),
        (("0.7", "0.15"), "two numbers"),
        ((True, False), "two numbers"),
        ((None, 0.1), "two numbers"),
        ((-0.1, 0.5), "between 0 and 1"),
        ((0.5, 1.5), "between 0 and 1"),
        ((float("nan"), 0.1), "between 0 and 1"),
        ((float("inf"), 0.1), "between 0 and 1"),
        ((0.8, 0.3), "above 1"),
        ((0.0, 0.5), "training ratio is 0"),
    ],
)
def test_bad_ratios_raise(ratios, match):
    with pytest.raises(UsageError, match=match):
        check_ratios(ratios)
    with pytest.raises(UsageError, match=match):
        assign_categories(SCANS_300, ratios)


def test_good_ratios_normalised():
    assert check_ratios((1, 0)) == (1.0, 0.0)
    assert check_ratios(np.array([0.7, 0.15])) == (0.7, 0.15)
    assert check_ratios([0.7, 0.30000000000000004]) == (0.7, 0.30000000000000004)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_raises(seed):
    with pytest.raises(UsageError, match="`seed`"):
        assign_categories(SCANS_300, seed=seed)


@pytest.mark.parametrize(
    ("n", "ratios", "ways"),
    [
        (2, (0.7, 0.15), 3),
        (1, (0.7, 0.15), 3),
        (0, (0.7, 0.15), 3),
        (1, (0.5, 0.5), 2),
        (1, (0.7, 0.0), 2),
    ],
)
def test_too_few_subjects(n, ratios, ways):
    scans = make_scans(n)
    with pytest.raises(DatasetError) as info:
        assign_categories(scans, ratios)
    message = str(info.value)
    assert f"found {n} subjects" in message
    assert f"{ways} ways" in message
    assert all(s.subject in message for s in scans)


def test_few_subjects_enough_for_fewer_categories():
    scans = make_scans(2)
    assert sorted(assign_categories(scans, (0.5, 0.5)).values()) == ["train", "validate"]
    assert sorted(assign_categories(scans, (0.7, 0.0)).values()) == ["test", "train"]
    assert set(assign_categories(make_scans(1), (1.0, 0.0)).values()) == {"train"}
    assert sorted(assign_categories(make_scans(3), (0.7, 0.15)).values()) == sorted(CATEGORIES)


# -- images.csv --------------------------------------------------------------------------------


def test_images_csv_round_trip(tmp_path):
    scans = make_scans(12, root=tmp_path / "src")
    scans.append(Scan("sub-nolabel", "", tmp_path / "src" / "x.mnc", None, (("file", "x"),)))
    categories = assign_categories(scans, (0.5, 0.25), seed=2)
    path = tmp_path / "target" / "report" / "images.csv"
    assert write_split_csv(scans, categories, path) == path
    assert [p.name for p in path.parent.iterdir()] == ["images.csv"]  # no temporary left
    table = read_split_csv(path)
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == len(scans)
    for row, scan in zip(table.itertuples(), scans, strict=True):
        assert row.subject == scan.subject
        assert row.session == scan.session
        assert row.input == str(scan.input.resolve())
        assert Path(row.input).is_absolute()
        assert row.label == (str(scan.label.resolve()) if scan.label else "")
        assert row.category == categories[scan.subject]
    assert table.loc[len(scans) - 1, "session"] == ""


def test_images_csv_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scans = [Scan("sub-01", "", Path("a/sub-01_T1w.mnc"), Path("a/sub-01_seg.mnc"), ())]
    write_split_csv(scans, {"sub-01": "train"}, "images.csv")
    row = read_split_csv(tmp_path / "images.csv").iloc[0]
    assert row["input"] == str(tmp_path / "a" / "sub-01_T1w.mnc")


def test_images_csv_clobber(tmp_path):
    scans = make_scans(3)
    categories = assign_categories(scans, (0.7, 0.15))
    path = tmp_path / "images.csv"
    write_split_csv(scans, categories, path)
    with pytest.raises(OutputExistsError):
        write_split_csv(scans, categories, path, clobber=False)
    write_split_csv(scans[:1], categories, path)
    assert len(read_split_csv(path)) == 1


def test_write_needs_a_category_for_every_subject(tmp_path):
    with pytest.raises(ValueError, match="sub-000 has no category"):
        write_split_csv(make_scans(1), {}, tmp_path / "images.csv")
    assert not (tmp_path / "images.csv").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "does not exist"),
        ("", "not a readable CSV"),
        ("subject,session,input,label\nsub-01,,a,b\n", "lacks the columns category"),
        ("subject,session,input,label,category\nsub-01,,a,b,training\n", "unknown categories"),
    ],
)
def test_read_bad_split_csv(tmp_path, text, match):
    path = tmp_path / "images.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DatasetError, match=match):
        read_split_csv(path)


def test_summarise_split_includes_empty_categories():
    scans = make_scans(4, seed=1)
    categories = assign_categories(scans, (0.5, 0.5))
    summary = summarise_split(scans, categories)
    assert list(summary) == list(CATEGORIES)
    assert summary["test"] == (0, 0)
    assert summary["train"][0] == summary["validate"][0] == 2
    assert summary["train"][1] + summary["validate"][1] == len(scans)
