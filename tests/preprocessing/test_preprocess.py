import itertools

import numpy as np
import pytest

from minc_keras.preprocessing.transforms import (
    VIEW_AXES,
    bounding_box,
    brain_mask,
    from_canonical,
    normalise_intensity,
    pad_slices,
    to_canonical,
)


def _signed_permutation_affines():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([1, -1], repeat=3):
            aff = np.zeros((4, 4))
            for axis, (world, sign) in enumerate(zip(perm, signs, strict=True)):
                aff[world, axis] = sign * (1.0 + axis * 0.5)
            aff[:3, 3] = [10.0, -20.0, 5.0]
            aff[3, 3] = 1
            yield aff


def _world(affine, shape):
    idx = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).T


@pytest.mark.parametrize("affine", list(_signed_permutation_affines()))
def test_canonical_keeps_world_positions_and_inverts(affine):
    data = np.arange(4 * 5 * 6, dtype=float).reshape(4, 5, 6)
    out, out_aff = to_canonical(data, affine)
    # the same voxel values sit at the same world positions
    original = dict(zip(map(tuple, _world(affine, data.shape).round(6)), data.ravel(), strict=True))
    moved = dict(zip(map(tuple, _world(out_aff, out.shape).round(6)), out.ravel(), strict=True))
    assert original == moved
    # canonical axes point along +x, +y, +z
    assert np.all(np.diag(out_aff[:3, :3]) > 0)
    np.testing.assert_array_equal(from_canonical(out, affine), data)


def test_axial_slice_is_constant_world_z_whatever_the_file_order():
    zyx = np.array([[0, 0, -1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    data = np.random.default_rng(0).random((7, 5, 6))  # (z, y, x)
    out, aff = to_canonical(data, zyx)
    k = 3
    world = _world(aff, out.shape).reshape(*out.shape, 3)
    assert np.ptp(world[:, :, k, 2]) == 0
    # and the slice holds the file's z = k plane, x flipped
    np.testing.assert_array_equal(out[:, :, k], data[k].T[::-1])
    assert VIEW_AXES["axial"] == 2


def test_from_canonical_carries_channels():
    aff = np.array([[0, 0, -1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    probs = np.random.default_rng(1).random((6, 5, 4, 3))
    back = from_canonical(probs, aff)
    assert back.shape == (4, 5, 6, 3)
    np.testing.assert_array_equal(to_canonical(back, aff)[0], probs)


def test_normalise_maps_percentiles_and_keeps_background_zero():
    data = np.zeros((10, 10, 10))
    data[2:8, 2:8, 2:8] = np.linspace(100, 300, 216).reshape(6, 6, 6)
    mask = brain_mask(data)
    out, (lo, hi) = normalise_intensity(data, mask, low=0, high=100)
    assert (lo, hi) == (100.0, 300.0)
    assert out[0, 0, 0] == 0
    assert out[mask].min() == 0
    assert out[mask].max() == pytest.approx(1.0)
    assert out.dtype == np.float32


def test_brain_mask_without_zero_background_is_everything():
    assert brain_mask(np.ones((4, 4, 4))).all()


def test_bounding_box_clips_margin_to_the_array():
    m = np.zeros((8, 6, 10), bool)
    m[0, 3, 9] = True
    assert bounding_box(m, margin=2) == (slice(0, 3), slice(1, 6), slice(7, 10))


def test_pad_slices_centres_and_reports_offset():
    x = np.ones((2, 3, 5))
    out, (top, left) = pad_slices(x, (8, 8))
    assert out.shape == (2, 8, 8)
    assert (top, left) == (2, 1)
    assert out.sum() == x.sum()
    with pytest.raises(ValueError, match="do not fit"):
        pad_slices(x, (2, 8))
