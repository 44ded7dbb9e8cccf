import json

import numpy as np
import pytest
from synthetic import ZYX_AFFINE, write_dataset

from minc_keras.core.errors import DatasetError, OutputExistsError
from minc_keras.data.cache import SliceCache, build_cache
from minc_keras.data.dataset import SliceDataset, encode_targets, slice_size, take_slices
from minc_keras.io import Volume, read_volume, write_volume
from minc_keras.preprocessing.transforms import to_canonical

CONFIG = {"source": "x", "input_str": "T1w", "label_str": "seg"}


def _rows(root, categories=("train", "train", "validate", "test")):
    rows = []
    for i, category in enumerate(categories, start=1):
        folder = root / f"sub-{i:02d}"
        rows.append({
            "subject": f"sub-{i:02d}", "session": "", "category": category,
            "input": str(next(folder.glob("*T1w*"))), "label": str(next(folder.glob("*seg*"))),
        })
    return rows


@pytest.fixture
def dataset_root(tmp_path):
    return write_dataset(tmp_path / "src", n_subjects=4, fmt="mnc")


def test_cache_stores_cropped_canonical_volumes(dataset_root, tmp_path):
    rows = _rows(dataset_root)
    cache = build_cache(rows, tmp_path / "data", config=CONFIG, quiet=True)
    assert cache.class_values == [0, 1, 2]
    scan = cache.scans[0]
    image = read_volume(rows[0]["input"])
    canonical, _ = to_canonical(image.data, image.affine)
    assert canonical.shape == (22, 26, 18)  # (x, y, z) from the file's (z, y, x)
    img = np.asarray(cache.image(0))
    # the crop holds all of the brain and the stored labels are the original values
    assert img.shape == tuple(scan.crop_shape)
    box = tuple(slice(s, s + n) for s, n in zip(scan.crop_start, scan.crop_shape, strict=True))
    assert np.count_nonzero(canonical[box]) == np.count_nonzero(canonical)
    label = read_volume(rows[0]["label"], label=True)
    np.testing.assert_array_equal(cache.label(0), to_canonical(label.data, label.affine)[0][box])
    assert img.dtype == np.float16
    assert 0.9 < img.max() <= 1.5


def test_cache_reuses_unchanged_scans_and_refuses_other_config(dataset_root, tmp_path):
    rows = _rows(dataset_root)
    build_cache(rows, tmp_path / "data", config=CONFIG, quiet=True)
    stamp = (tmp_path / "data" / "sub-01_img.npy").stat().st_mtime_ns
    build_cache(rows, tmp_path / "data", config=CONFIG, quiet=True)
    assert (tmp_path / "data" / "sub-01_img.npy").stat().st_mtime_ns == stamp
    with pytest.raises(OutputExistsError, match="`clobber`"):
        build_cache(rows, tmp_path / "data", config={**CONFIG, "label_str": "manual"}, quiet=True)
    build_cache(rows, tmp_path / "data", config={**CONFIG, "label_str": "manual"}, clobber=True,
                quiet=True)
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["config"]["label_str"] \
        == "manual"


def test_label_on_another_grid_is_refused(dataset_root, tmp_path):
    rows = _rows(dataset_root)
    label = read_volume(rows[1]["label"], label=True)
    shifted = ZYX_AFFINE.copy()
    shifted[0, 3] += 5
    write_volume(Volume(label.data, shifted), rows[1]["label"], clobber=True)
    with pytest.raises(DatasetError, match="resample the label onto the image grid"):
        build_cache(rows, tmp_path / "data", config=CONFIG, quiet=True)


def test_test_label_with_a_class_unseen_in_training_is_refused(dataset_root, tmp_path):
    rows = _rows(dataset_root)
    label = read_volume(rows[3]["label"], label=True)
    data = label.data.copy()
    data[data == 2] = 7
    write_volume(Volume(data, label.affine), rows[3]["label"], clobber=True)
    with pytest.raises(DatasetError, match="value 7, which no training label has"):
        build_cache(rows, tmp_path / "data", config=CONFIG, quiet=True)


def test_dataset_yields_exactly_the_cached_slices(dataset_root, tmp_path):
    cache = build_cache(_rows(dataset_root), tmp_path / "data", config=CONFIG, quiet=True)
    data = SliceDataset(cache, "train", view="axial", batch_size=5, multiple=8)
    size = slice_size(cache, "axial", 8)
    assert size[0] % 8 == 0
    assert size[1] % 8 == 0
    seen = []
    for i in range(len(data)):
        x, y = data[i]
        assert x.shape[1:] == (*size, 1)
        assert y.shape[1:] == (*size, 3)
        np.testing.assert_array_equal(y.sum(-1), 1)
        seen.append((x, y))
    xs = np.concatenate([s[0] for s in seen])[..., 0]
    ys = np.concatenate([s[1] for s in seen]).argmax(-1)
    expected_x, expected_y = [], []
    for index in cache.by_category("train"):
        ks = cache.scans[index].nonempty[2]
        expected_x.append(take_slices(cache.image(index), 2, ks, size))
        expected_y.append(cache.classes(take_slices(cache.label(index), 2, ks, size)))
    np.testing.assert_array_equal(xs, np.concatenate(expected_x).astype(np.float32))
    np.testing.assert_array_equal(ys, np.concatenate(expected_y))
    assert data.num_slices == sum(len(cache.scans[i].nonempty[2])
                                  for i in cache.by_category("train"))


def test_shuffled_dataset_is_a_permutation_and_reopens(dataset_root, tmp_path):
    build_cache(_rows(dataset_root), tmp_path / "data", config=CONFIG, quiet=True)
    cache = SliceCache.open(tmp_path / "data")
    plain = SliceDataset(cache, "train", view="coronal", batch_size=1000)
    shuffled = SliceDataset(cache, "train", view="coronal", batch_size=1000, shuffle=True, seed=3)
    a, b = plain[0][0], shuffled[0][0]
    assert a.shape == b.shape
    assert np.isclose(a.sum(), b.sum(), rtol=1e-5)
    assert not np.array_equal(a, b)


def test_encode_targets_binary_and_multiclass():
    classes = np.array([[0, 1], [2, 0]])
    assert encode_targets(classes, 3).shape == (2, 2, 3)
    np.testing.assert_array_equal(encode_targets(classes, 1)[..., 0], classes > 0)


def test_open_without_cache_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="run `minc-keras prepare`"):
        SliceCache.open(tmp_path)


def test_repeat_class_shows_the_slices_that_hold_it_twice(dataset_root, tmp_path):
    from minc_keras.training.options import TrainOptions
    from minc_keras.training.sampling import rare_class as _rare_class

    cache = build_cache(_rows(dataset_root), tmp_path / "data", config=CONFIG, quiet=True)
    rare = _rare_class(cache, TrainOptions(oversample_rare=True))
    assert cache.class_values[rare] == 2  # the small core, not the shell around it
    assert _rare_class(cache, TrainOptions()) is None
    plain = SliceDataset(cache, "train", view="sagittal", batch_size=4)
    repeated = SliceDataset(cache, "train", view="sagittal", batch_size=4, repeat_class=rare)
    rows, counts = np.unique(repeated.index, axis=0, return_counts=True)
    np.testing.assert_array_equal(rows, np.unique(plain.index, axis=0))
    for (scan, k), count in zip(rows, counts, strict=True):
        holds = bool((np.asarray(cache.label(scan))[k] == 2).any())  # sagittal: axis 0
        assert count == (2 if holds else 1)
    assert 0 < repeated.num_slices - plain.num_slices < plain.num_slices


def test_cache_keeps_recent_scans_mapped_but_pickles_without_them(dataset_root, tmp_path,
                                                                   monkeypatch):
    import pickle

    import minc_keras.data.cache as cache_module

    cache = build_cache(_rows(dataset_root), tmp_path / "data", config=CONFIG, quiet=True)
    assert cache.image(0) is cache.image(0)  # mapped once, read many times
    monkeypatch.setattr(cache_module, "MAPPED_SCANS", 1)
    first = cache.image(0)
    cache.label(1), cache.image(1)  # one scan's two files stay mapped: scan 0's went
    assert cache.image(0) is not first
    np.testing.assert_array_equal(cache.image(0), first)
    copy = pickle.loads(pickle.dumps(cache))  # as PyDataset's worker processes get it
    assert len(pickle.dumps(cache)) < 20_000  # the arrays did not travel
    np.testing.assert_array_equal(copy.image(0), first)
