"""Training-slice augmentation keeps labels aligned with the image."""

import logging

import numpy as np
from scipy import ndimage
from synthetic import make_subject, write_dataset

from minc_keras.data.augment import SliceAugmenter, expand_class
from minc_keras.data.cache import build_cache
from minc_keras.io import Volume, read_volume, write_volume
from minc_keras.training.options import TrainOptions
from minc_keras.training.sampling import augmenter as _augmenter


def _slices(n=6):
    image, labels = make_subject(3, shape_xyz=(40, 48, 8))
    images = np.repeat(image[None, :, :, 4, None] / 100.0, n, axis=0).astype(np.float32)
    return images, np.repeat(labels[None, :, :, 4], n, axis=0).astype(np.uint8)


def test_geometry_moves_labels_with_the_image():
    images, classes = _slices()
    augmenter = SliceAugmenter(gamma=0, bias=0, noise=0, probability=1.0, rotate_deg=15)
    out, labels = augmenter(images, classes, np.random.default_rng(0))
    assert not np.array_equal(labels, classes)  # something moved
    for image, label in zip(out[..., 0], labels, strict=True):
        # the bright core (label 2) and the background (0) stay where the image says
        assert image[label == 2].mean() > 0.85
        assert (image[label == 0] < 0.5).mean() > 0.97
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_intensity_changes_leave_labels_and_background_alone():
    images, classes = _slices()
    augmenter = SliceAugmenter(flip=0, rotate_deg=0, scale=0, probability=1.0)
    out, labels = augmenter(images, classes, np.random.default_rng(1))
    np.testing.assert_array_equal(labels, classes)
    assert np.all(out[images == 0] == 0)
    assert not np.allclose(out, images)
    assert out.dtype == np.float32


def test_bias_field_is_the_quadratic_polynomial_it_draws():
    """The broadcast sum equals the polynomial written out on full coordinate grids."""
    augmenter = SliceAugmenter(bias=0.2)
    for shape in [(9, 11), (5, 7, 6)]:
        field = augmenter._bias_field(shape, np.random.default_rng(3))
        grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")[::-1]
        terms = [*grids, *[a * b for k, a in enumerate(grids) for b in grids[k + 1:]],
                 *[a**2 - 0.5 for a in grids]]
        weights = np.random.default_rng(3).uniform(-1, 1, len(terms))
        surface = sum(w * t for w, t in zip(weights, terms, strict=True))
        surface *= np.log1p(0.2) / np.abs(surface).max()
        np.testing.assert_allclose(field, np.exp(surface), rtol=1e-12)
        assert np.isclose(np.abs(np.log(field)).max(), np.log1p(0.2))  # peak +-20 %


def test_same_seed_same_batch_and_inputs_untouched():
    images, classes = _slices()
    before = images.copy()
    a = SliceAugmenter()(images, classes, np.random.default_rng(5))
    b = SliceAugmenter()(images, classes, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(images, before)


def test_probability_zero_is_the_identity():
    images, classes = _slices()
    out, labels = SliceAugmenter(probability=0.0)(images, classes, np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(labels, classes)


def _rings(size=81):
    """Concentric classes as around a ventricle: 1 (dark) inside 3 inside 2, 0 outside."""
    y, x = np.mgrid[:size, :size]
    r = np.hypot(y - size // 2, x - size // 2)
    labels = np.select([r < 6, r < 14, r < 18], [1, 3, 2], 0).astype(np.uint8)
    return np.choose(labels, [0.0, 0.2, 0.5, 0.9]).astype(np.float32), labels


def test_expand_class_grows_the_class_by_about_the_distance():
    labels = np.zeros((80, 80), np.uint8)
    labels[30:50, 30:50] = 1
    image = np.where(labels == 1, 0.2, 0.8).astype(np.float32)
    for voxels in (2.0, 4.0, 6.0):
        _, grown = expand_class(image, labels, 1, voxels)
        width = int((grown[40] == 1).sum())  # 20 before, + about 2 * voxels
        assert 20 + 1.5 * voxels <= width <= 20 + 2 * voxels + 1, (voxels, width)
        np.testing.assert_array_equal(grown[:8], labels[:8])  # far away: untouched


def test_expand_class_compresses_the_tissue_around_without_folding():
    image, labels = _rings()
    new_image, grown = expand_class(image, labels, 1, 5.0)
    assert (grown == 1).sum() > 2 * (labels == 1).sum()
    for cls in (1, 2, 3):  # every class stays one piece: a fold would break a ring
        assert ndimage.label(grown == cls)[1] == 1, cls
    for ray in (grown[40, 40:], grown[40, 40::-1], grown[40:, 40], grown[40::-1, 40]):
        runs = [int(v) for i, v in enumerate(ray) if i == 0 or v != ray[i - 1]]
        assert runs == [1, 3, 2, 0]  # the layers keep their order outwards
    # the image moved with the labels
    assert np.abs(new_image - np.choose(grown, [0.0, 0.2, 0.5, 0.9])).mean() < 0.02


def test_expand_class_works_in_3d_and_ignores_absent_classes():
    volume = np.zeros((30, 30, 30), np.uint8)
    volume[10:20, 10:20, 10:20] = 1
    image = volume.astype(np.float32)
    _, grown = expand_class(image, volume, 1, 3.0)
    assert (grown == 1).sum() > 1.5 * (volume == 1).sum()
    same_image, same = expand_class(image, volume, 7, 3.0)
    assert same is volume
    assert same_image is image


def test_atrophy_enlarges_only_the_chosen_class_in_the_batch():
    images, classes = _slices()
    augmenter = SliceAugmenter(probability=0.0, atrophy=1.0, atrophy_class=1)
    out, labels = augmenter(images, classes, np.random.default_rng(0))
    for before, after in zip(classes, labels, strict=True):
        assert (after == 1).sum() > (before == 1).sum()
    for image, label in zip(out[..., 0], labels, strict=True):
        assert image[label == 2].mean() > 0.85  # the image moved with the labels
    unchanged = SliceAugmenter(probability=0.0, atrophy=1.0)(images, classes,
                                                            np.random.default_rng(0))
    np.testing.assert_array_equal(unchanged[1], classes)  # no class named: nothing to do


def _cache(tmp_path, binary=False):
    root = write_dataset(tmp_path / "src", n_subjects=2)
    rows = []
    for i, folder in enumerate(sorted(root.iterdir())):
        label = next(folder.glob("*seg*"))
        if binary:  # a brain mask: one class besides the background
            volume = read_volume(label, label=True)
            label.unlink()
            write_volume(Volume((volume.data > 0).astype(np.int16), volume.affine), label)
        rows.append({"subject": folder.name, "session": "", "input":
                     str(next(folder.glob("*T1w*"))), "label": str(label),
                     "category": "train" if i == 0 else "validate"})
    config = {"source": "x", "input_str": "T1w", "label_str": "seg"}
    return build_cache(rows, tmp_path / "data", config=config, quiet=True)


def test_training_enlarges_the_darkest_class_when_asked(tmp_path, caplog):
    cache = _cache(tmp_path)
    assert _augmenter(cache, TrainOptions()) is None
    assert _augmenter(cache, TrainOptions(augment=True)).atrophy == 0
    with caplog.at_level(logging.INFO, logger="minc_keras"):
        augmenter = _augmenter(cache, TrainOptions(augment=True, augment_atrophy=True))
    assert augmenter.atrophy_class == 1  # the shell (60) is darker than the core (100)
    assert augmenter.atrophy > 0
    assert augmenter.probability > 0
    assert "class 1 (label 1, the darkest)" in caplog.text
    alone = _augmenter(cache, TrainOptions(augment_atrophy=True))
    assert alone.probability == 0
    assert alone.atrophy_class == 1


def test_atrophy_is_skipped_for_a_brain_mask_without_a_warning(tmp_path, caplog):
    cache = _cache(tmp_path, binary=True)
    with caplog.at_level(logging.INFO, logger="minc_keras"):
        augmenter = _augmenter(cache, TrainOptions(augment=True, augment_atrophy=True))
    assert augmenter.atrophy_class is None
    assert augmenter.probability > 0  # the other augmentation still runs
    assert "atrophy augmentation skipped" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_geometry_and_atrophy_equal_resampling_the_whole_slice():
    """Resampling only the boxes that can change gives the whole-slice result."""
    rings, classes = _rings(41)  # a head off the slice's centre, background 0 around
    image = np.zeros((64, 72), np.float32)
    labels = np.zeros((64, 72), np.uint8)
    image[8:49, 26:67], labels[8:49, 26:67] = rings, classes
    augmenter = SliceAugmenter(flip=0.0)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        rng.random()  # the draw for mirroring
        angle = np.deg2rad(rng.uniform(-10, 10))
        zoom = rng.uniform(0.9, 1.1)
        matrix = np.array([[np.cos(angle), -np.sin(angle)],
                           [np.sin(angle), np.cos(angle)]]) / zoom
        centre = (np.asarray(image.shape) - 1) / 2
        offset = centre - matrix @ centre
        out, moved = augmenter.geometry(image, labels, np.random.default_rng(seed))
        np.testing.assert_allclose(out, ndimage.affine_transform(image, matrix, offset, order=1),
                                   atol=1e-5)
        assert (moved != ndimage.affine_transform(labels, matrix, offset, order=0)).sum() <= 2
    for voxels in (1.0, 3.5, 6.0):  # the warp written out on the whole slice
        smooth = ndimage.gaussian_filter((labels == 1).astype(np.float32), 1.5 * voxels)
        gradient = np.stack(np.gradient(smooth))
        coordinates = np.indices(labels.shape, dtype=np.float32) + (
            voxels / np.sqrt((gradient**2).sum(axis=0)).max()) * gradient
        out, grown = expand_class(image, labels, 1, voxels)
        np.testing.assert_allclose(
            out, ndimage.map_coordinates(image, coordinates, order=1, mode="nearest"), atol=1e-5)
        np.testing.assert_array_equal(
            grown, ndimage.map_coordinates(labels, coordinates, order=0, mode="nearest"))


def _sided_slice():
    """An axial slice (rows = x): a structure left (class 1) and right (class 2), a
    midline one (3), and an image brighter on the left, so a flip shows."""
    labels = np.zeros((1, 12, 10), np.uint8)
    labels[0, 2:5, 3:7], labels[0, 7:10, 3:7], labels[0, 5:7, 1:9] = 1, 2, 3
    images = (labels[..., None] > 0) * np.linspace(2.0, 1.0, 12)[None, :, None, None]
    return images.astype(np.float32), labels


def test_a_left_right_flip_swaps_the_paired_classes():
    images, labels = _sided_slice()
    flip = SliceAugmenter(flip=1.0, rotate_deg=0, scale=0, gamma=0, bias=0, noise=0,
                          probability=1.0, mirror_classes=(0, 2, 1, 3))
    out, got = flip.for_view("axial")(images, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(out, images[:, ::-1])  # mirrored along x ...
    np.testing.assert_array_equal(got, labels)  # ... and Left stays left: 1 and 2 swapped
    assert got[0, 3, 4] == 1  # the left structure's place is labelled left after the flip
    # without pairs (tissue): the slice's columns mirrored, classes kept, as always
    plain = SliceAugmenter(flip=1.0, rotate_deg=0, scale=0, gamma=0, bias=0, noise=0,
                           probability=1.0).for_view("axial")
    out, got = plain(images, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(got, labels[:, :, ::-1])
    # a sagittal slice holds no left-right axis: mirrored along its columns, no swap
    out, got = flip.for_view("sagittal")(images, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(got, labels[:, :, ::-1])


def test_a_volume_flip_swaps_the_paired_classes():
    from minc_keras.data.augment import VolumeAugmenter

    images, labels = _sided_slice()
    cubes, classes = images[:, :, :, None].repeat(3, axis=3), labels[..., None].repeat(3, axis=3)
    flip = VolumeAugmenter(flip=1.0, probability=0.0, mirror_classes=(0, 2, 1, 3))
    out, got = flip(cubes, classes, np.random.default_rng(0))
    np.testing.assert_array_equal(out, cubes[:, ::-1])
    np.testing.assert_array_equal(got, classes)


def test_training_flips_swap_the_pairs_of_the_label_table(tmp_path):
    cache = _cache(tmp_path)  # label values 0, 1, 2
    table = tmp_path / "sides.tsv"
    table.write_text("index\tname\n1\tLeft Thing\n2\tRight Thing\n")
    paired = _augmenter(cache, TrainOptions(augment=True, label_table=str(table)))
    assert paired.mirror_classes == (0, 2, 1)
    assert _augmenter(cache, TrainOptions(augment=True)).mirror_classes is None
    table.write_text("index\tname\n1\tshell\n2\tcore\n")
    assert _augmenter(cache, TrainOptions(augment=True, label_table=str(table))
                      ).mirror_classes is None
