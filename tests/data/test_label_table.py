"""The label table (``--label-table``): names, sparse codes, left/right pairs, bad tables."""

from pathlib import Path

import numpy as np
import pytest
from synthetic import relabel_sparse, sparse_codes, write_sparse_dataset, write_structure_table

from minc_keras.cli.main import main
from minc_keras.core.errors import UsageError
from minc_keras.data.cache import SliceCache
from minc_keras.data.label_table import LabelTable, mirror_classes, read_label_table

REAL_TABLE = Path("/work/shared/data/oasis-structures.tsv")


def _table(tmp_path, text):
    path = tmp_path / "labels.tsv"
    path.write_text(text)
    return path


def test_table_names_classes_and_keeps_other_columns(tmp_path):
    table = read_label_table(_table(tmp_path, "index\tname\ttissue\n207\tRight Cortex\tGM\n"
                                              "4\t3rd Ventricle\tCSF\n206\tLeft Cortex\tGM\n"))
    assert table.class_names([0, 4, 206, 207]) == ["background", "3rd Ventricle",
                                                    "Left Cortex", "Right Cortex"]
    assert table.columns == {"tissue": ["GM", "CSF", "GM"]}
    assert table.mirror_classes([0, 4, 206, 207]) == [0, 1, 3, 2]


@pytest.mark.parametrize(("text", "words"), [
    ("index\tname\n4\tA\n4\tB\n", "repeats index 4"),
    ("index\tlabel\n4\tA\n", "no column name"),
    ("code\tname\n4\tA\n", "no column index"),
    ("index\tname\nfour\tA\n", "not a whole number"),
])
def test_bad_tables_are_refused_with_one_sentence(tmp_path, text, words):
    with pytest.raises(UsageError, match=words) as error:
        read_label_table(_table(tmp_path, text))
    assert str(error.value).count(". ") == 0
    assert "\n" not in str(error.value)


def test_unreadable_table_is_refused(tmp_path):
    with pytest.raises(UsageError, match="cannot be read"):
        read_label_table(tmp_path / "absent.tsv")


def test_code_missing_from_the_table_is_refused():
    table = LabelTable([4, 7], ["A", "B"])
    with pytest.raises(UsageError, match="no row for label codes 10, 13"):
        table.class_names([0, 4, 7, 10, 13])


def test_mirror_pairs_left_and_right_names_only():
    names = ["background", "left hippocampus", "Right Hippocampus", "Left Caudate", "Brain Stem",
             "Leftover"]
    assert mirror_classes(names) == [0, 2, 1, 3, 4, 5]


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    codes = sparse_codes(140)
    source = write_sparse_dataset(root / "source", codes, n_subjects=3)
    return root, source, codes


def _prepare(source, target, *extra):
    return main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.67", "0.33", "--quiet",
                 *extra])


def test_sparse_codes_of_many_classes_map_to_classes_and_back(sparse_run):
    root, source, codes = sparse_run
    table = write_structure_table(root / "structures.tsv", codes)
    assert _prepare(source, root / "run", "--label-table", str(table)) == 0
    cache = SliceCache.open(root / "run" / "data")
    present = sorted({int(v) for i in range(len(cache.scans))
                      for v in np.unique(np.asarray(cache.label(i)))})
    assert cache.class_values == present
    assert len(present) > 100
    for i in range(len(cache.scans)):
        label = np.asarray(cache.label(i))
        classes = cache.classes(label)
        np.testing.assert_array_equal(np.asarray(cache.class_values)[classes], label)


def test_prepare_refuses_a_table_missing_a_code_with_exit_2(sparse_run, capsys):
    root, source, codes = sparse_run
    table = write_structure_table(root / "short.tsv", codes[:-1])
    assert _prepare(source, root / "run-short", "--label-table", str(table)) == 2
    err = capsys.readouterr().err
    assert f"no row for label code {codes[-1]} found in the labels" in err
    assert len(err.strip().splitlines()) == 1


def test_prepare_refuses_a_duplicate_index_with_exit_2(sparse_run, capsys):
    root, source, _ = sparse_run
    table = _table(root, "index\tname\n4\tA\n4\tB\n")
    assert _prepare(source, root / "run-dup", "--label-table", str(table)) == 2
    assert "repeats index 4" in capsys.readouterr().err
    assert not (root / "run-dup").exists()


def test_relabel_sparse_is_left_right_symmetric():
    labels = np.ones((6, 4, 2), np.int16)
    out = relabel_sparse(labels, [4, 7, 10, 13])
    assert set(np.unique(out)) == {4, 7, 10, 13}
    np.testing.assert_array_equal(np.vectorize({4: 7, 7: 4, 10: 13, 13: 10}.get)(out[::-1]), out)


@pytest.mark.skipif(not REAL_TABLE.exists(), reason="the OASIS structures table is not here")
def test_the_real_structures_table_reads_and_pairs():
    table = read_label_table(REAL_TABLE)
    assert len(table.indices) > 130
    assert {"tissue", "scored_2012"} <= set(table.columns)
    values = [0, *sorted(table.indices)]
    names = table.class_names(values)
    mirror = table.mirror_classes(values)
    left = names.index("Left Hippocampus")
    assert names[mirror[left]] == "Right Hippocampus"
    assert mirror[names.index("3rd Ventricle")] == names.index("3rd Ventricle")
    assert all(mirror[mirror[k]] == k for k in range(len(values)))


def test_more_classes_than_a_byte_holds_are_refused():
    from types import SimpleNamespace

    from minc_keras.core.errors import DatasetError
    from minc_keras.data.cache import _class_values

    scan = SimpleNamespace(category="train", label="l.mnc", label_values=sparse_codes(300))
    with pytest.raises(DatasetError, match="at most 256 classes can be learnt"):
        _class_values([scan])
    scan.label_values = sparse_codes(255)
    assert len(_class_values([scan])) == 256
