"""Tests for the demo dataset made from nilearn's MNI template."""

import sys

import numpy as np
import pytest

nilearn_datasets = pytest.importorskip("nilearn.datasets")

from scipy import ndimage  # noqa: E402

from minc_keras.core.errors import OutputExistsError, UsageError  # noqa: E402
from minc_keras.data.demo import IMAGE_SUFFIX, LABEL_SUFFIX, make_demo_dataset  # noqa: E402
from minc_keras.io import read_volume  # noqa: E402

N_SUBJECTS = 3
SEED = 7


def _paths(root, subject):
    return (
        root / subject / f"{subject}{IMAGE_SUFFIX}",
        root / subject / f"{subject}{LABEL_SUFFIX}",
    )


def _read(root, subject):
    image_path, label_path = _paths(root, subject)
    return read_volume(image_path), read_volume(label_path, label=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    written = make_demo_dataset(root, n_subjects=N_SUBJECTS, seed=SEED)
    return root, written


def test_workshop_layout(demo):
    root, written = demo
    expected = []
    for index in range(1, N_SUBJECTS + 1):
        expected.extend(_paths(root, f"sub-{index:02d}"))
    assert written == expected
    assert all(path.is_file() for path in written)
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "sub-01", "sub-02", "sub-03"]
    assert written[0].name == "sub-01_task-01_ses-01_T1w_anat_rsl.mnc"
    assert written[1].name == "sub-01_task-01_ses-01_variant-seg_rsl.mnc"


def test_readme_says_what_the_data_are(demo):
    text = (demo[0] / "README.md").read_text(encoding="utf-8")
    for phrase in (
        "NOT real subjects",
        "Fonov",
        "2009a",
        "nilearn",
        "1 grey matter",
        "2 white matter",
        "Copyright (C) 1993-2004 Louis Collins",
    ):
        assert phrase in text


def test_geometry_is_the_template_grid_in_minc_order(demo):
    template = nilearn_datasets.load_mni152_template(resolution=2)
    # nilearn's (x, y, z) array becomes (z, y, x): reversed shape, permuted columns.
    expected = np.asarray(template.affine, dtype=float).copy()
    expected[:, :3] = expected[:, [2, 1, 0]]
    for index in range(1, N_SUBJECTS + 1):
        image, label = _read(demo[0], f"sub-{index:02d}")
        assert image.shape == template.shape[::-1]
        assert label.shape == image.shape
        np.testing.assert_allclose(image.affine, expected, atol=1e-4)
        np.testing.assert_allclose(label.affine, image.affine, atol=1e-6)


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_brain_matches_the_template_in_world_space(demo):
    # If an axis were mixed up or flipped, the T1 would not line up with the template.
    template = nilearn_datasets.load_mni152_template(resolution=2).get_fdata()
    template = template.transpose(2, 1, 0)
    image, _ = _read(demo[0], "sub-01")
    brain = image.data > 0
    assert _dice(template > 0.2, brain) > 0.88
    assert _dice(template[::-1] > 0.2, brain) < 0.85  # upside down
    inside = (template > 0.2) | brain
    r = np.corrcoef(template[inside], image.data[inside])[0, 1]
    r_flipped = np.corrcoef(template[::-1][inside], image.data[inside])[0, 1]
    assert r > 0.3
    assert r > r_flipped + 0.2


def test_labels_and_stored_types(demo):
    h5py = pytest.importorskip("h5py")
    image_path, label_path = _paths(demo[0], "sub-01")
    with h5py.File(image_path, "r") as f:
        assert f["minc-2.0/image/0/image"].dtype == np.int16
    with h5py.File(label_path, "r") as f:
        assert f["minc-2.0/image/0/image"].dtype == np.uint8
    for index in range(1, N_SUBJECTS + 1):
        _, label = _read(demo[0], f"sub-{index:02d}")
        assert label.data.dtype.kind in "iu"
        assert set(np.unique(label.data).tolist()) == {0, 1, 2}


def test_t1_is_skull_stripped(demo):
    for index in range(1, N_SUBJECTS + 1):
        image, label = _read(demo[0], f"sub-{index:02d}")
        t1 = image.data
        assert t1.min() == 0
        assert 200 < t1.max() < 1200
        # Every tissue voxel is bright; nothing more than 10 mm from tissue is.
        assert (t1[label.data > 0] > 0).all()
        far = ndimage.distance_transform_edt(label.data == 0, sampling=image.voxel_sizes) > 10
        assert far.mean() > 0.5
        assert (t1[far] == 0).all()


def test_tissue_volumes_and_contrast_are_plausible(demo):
    for index in range(1, N_SUBJECTS + 1):
        image, label = _read(demo[0], f"sub-{index:02d}")
        counts = np.bincount(label.data.ravel(), minlength=3)
        gm_ml, wm_ml = counts[1:] * image.voxel_volume_ml
        assert 800 < gm_ml < 1500
        assert 450 < wm_ml < 900
        gm_mean = image.data[label.data == 1].mean()
        wm_mean = image.data[label.data == 2].mean()
        assert wm_mean > 1.1 * gm_mean
        assert gm_mean > 0


def test_subjects_differ(demo):
    images, labels = zip(
        *(_read(demo[0], f"sub-{i:02d}") for i in range(1, N_SUBJECTS + 1)), strict=True
    )
    for a in range(N_SUBJECTS):
        for b in range(a + 1, N_SUBJECTS):
            tissue = (labels[a].data > 0) | (labels[b].data > 0)
            changed = (labels[a].data != labels[b].data)[tissue].mean()
            assert changed > 0.05
            assert not np.array_equal(images[a].data, images[b].data)


def test_same_seed_same_data(demo, tmp_path):
    # Subject k depends on the seed and k only, so one subject is enough to compare.
    again = make_demo_dataset(tmp_path / "again", n_subjects=1, seed=SEED)
    image, label = _read(demo[0], "sub-01")
    np.testing.assert_array_equal(read_volume(again[0]).data, image.data)
    np.testing.assert_array_equal(read_volume(again[1], label=True).data, label.data)
    other = make_demo_dataset(tmp_path / "other", n_subjects=1, seed=SEED + 1)
    assert not np.array_equal(read_volume(other[0]).data, image.data)


def test_non_empty_dest_needs_clobber(tmp_path):
    dest = tmp_path / "demo"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"demo.*`clobber`"):
        make_demo_dataset(dest, n_subjects=1)
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    written = make_demo_dataset(dest, n_subjects=1, clobber=True)
    assert all(p.is_file() for p in written)
    assert (dest / "notes.txt").read_text() == "mine"
    # Running again over its own output is fine with clobber.
    assert make_demo_dataset(dest, n_subjects=1, clobber=True) == written


def test_empty_existing_dest_is_fine(tmp_path):
    written = make_demo_dataset(tmp_path, n_subjects=1, resolution_mm=4)
    image, label = read_volume(written[0]), read_volume(written[1], label=True)
    np.testing.assert_allclose(image.voxel_sizes, [4, 4, 4])
    assert label.shape == image.shape


def test_dest_that_is_a_file_is_refused(tmp_path):
    dest = tmp_path / "file"
    dest.write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        make_demo_dataset(dest, n_subjects=1)


def test_missing_nilearn_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)
    with pytest.raises(UsageError, match="pip install nilearn"):
        make_demo_dataset(tmp_path / "demo", n_subjects=1)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_subjects": 0}, "n_subjects"),
        ({"n_subjects": 1.5}, "whole numbers"),
        ({"resolution_mm": 0.5}, "resolution_mm"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(UsageError, match=match):
        make_demo_dataset(tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo").exists()


def test_demo_data_command_line(tmp_path, capsys):
    from minc_keras.cli.main import main

    assert main(["demo-data", str(tmp_path / "demo"), "--subjects", "3"]) == 0
    assert "wrote 6 files" in capsys.readouterr().out
    assert len(list((tmp_path / "demo").glob("sub-*/*.mnc"))) == 6
    assert main(["demo-data", str(tmp_path / "demo"), "--subjects", "3"]) == 2
    assert "--clobber" in capsys.readouterr().err
