"""Dice losses and metrics against numbers worked out by hand."""

import math

import keras
import numpy as np
import pytest

from minc_keras.core.errors import UsageError
from minc_keras.models import (
    DiceCELoss,
    DiceLoss,
    DiceScore,
    class_balance_weights,
    dice_ce_loss,
    dice_loss,
    dice_per_class,
    get_loss,
    make_metrics,
)


def one_hot(labels, k=3):
    return np.eye(k, dtype=np.float32)[np.asarray(labels)]


def soft(labels):
    """Three-class probabilities, 0.8 on the label and 0.1 elsewhere."""
    return one_hot(labels) * 0.7 + 0.1


def value(tensor):
    return keras.ops.convert_to_numpy(tensor)


# One sample of 2 x 2 pixels, two classes: true labels [[0, 1], [1, 1]].
TRUE_2x2 = one_hot([[[0, 1], [1, 1]]], 2)


def test_dice_loss_is_zero_for_a_perfect_prediction():
    assert value(DiceLoss()(TRUE_2x2, TRUE_2x2)) == pytest.approx(0.0, abs=1e-7)
    labels = [[[0, 1, 2], [2, 2, 0]], [[1, 1, 1], [0, 0, 2]]]
    assert value(DiceLoss()(one_hot(labels), one_hot(labels))) == pytest.approx(0.0, abs=1e-7)


def test_dice_loss_is_one_for_a_completely_wrong_prediction():
    wrong = one_hot([[[1, 0], [0, 0]]], 2)
    # No overlap: class 0 has |T| = 1, |P| = 3; class 1 has |T| = 3, |P| = 1.
    assert value(DiceLoss(smooth=0.0)(TRUE_2x2, wrong)) == pytest.approx(1.0)
    assert value(DiceLoss(smooth=1e-6)(TRUE_2x2, wrong)) == pytest.approx(1.0, abs=1e-6)
    # Default smoothing 1: each class (0 + 1) / (4 + 1) = 0.2, loss 0.8.
    assert value(DiceLoss()(TRUE_2x2, wrong)) == pytest.approx(0.8)


def test_dice_loss_soft_probabilities_by_hand():
    y_true = one_hot([[[0, 1]]], 2)  # 1 x 1 x 2 pixels
    y_pred = np.array([[[[0.75, 0.25], [0.25, 0.75]]]], np.float32)
    # Each class: I = 0.75, |T| = 1, |P| = 1 -> Dice 0.75, loss 0.25.
    assert value(dice_loss(y_true, y_pred, smooth=0.0)) == pytest.approx([0.25])
    # Smoothing 1: (1.5 + 1) / (2 + 1).
    assert value(dice_loss(y_true, y_pred)) == pytest.approx([1 - 2.5 / 3])


def test_dice_loss_per_sample_and_sparse_targets():
    y_true = np.concatenate([TRUE_2x2, one_hot([[[1, 0], [0, 0]]], 2)])
    y_pred = np.concatenate([TRUE_2x2, one_hot([[[1, 0], [0, 0]]], 2)[..., ::-1]])
    per_sample = value(DiceLoss(smooth=0.0, reduction=None)(y_true, y_pred))
    np.testing.assert_allclose(per_sample, [0.0, 1.0], atol=1e-7)
    assert value(DiceLoss(smooth=0.0)(y_true, y_pred)) == pytest.approx(0.5)
    labels = np.argmax(y_true, -1)
    np.testing.assert_allclose(value(dice_loss(labels, y_pred)), value(dice_loss(y_true, y_pred)))
    np.testing.assert_allclose(
        value(dice_loss(labels[..., None], y_pred)), value(dice_loss(y_true, y_pred))
    )


def test_dice_loss_binary_sigmoid():
    y_true = np.array([1, 0, 1, 0], np.float32).reshape(1, 2, 2, 1)
    y_pred = np.array([1, 0, 0.5, 0.5], np.float32).reshape(1, 2, 2, 1)
    # I = 1.5, |T| = 2, |P| = 2.
    assert value(DiceLoss(smooth=0.0)(y_true, y_pred)) == pytest.approx(0.25)
    assert value(DiceLoss()(y_true, y_pred)) == pytest.approx(1 - 4 / 5)


def test_dice_ce_is_dice_plus_crossentropy():
    y_true = one_hot([[[0, 1]]], 2)
    y_pred = np.array([[[[0.75, 0.25], [0.25, 0.75]]]], np.float32)
    expected = 0.25 - math.log(0.75)
    assert value(DiceCELoss(smooth=0.0)(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)

    rng = np.random.default_rng(3)
    y_true = one_hot(rng.integers(0, 3, (2, 4, 5)))
    y_pred = value(keras.ops.softmax(rng.normal(size=(2, 4, 5, 3)).astype(np.float32)))
    total = DiceLoss()(y_true, y_pred) + keras.losses.CategoricalCrossentropy()(y_true, y_pred)
    assert value(DiceCELoss()(y_true, y_pred)) == pytest.approx(value(total), rel=1e-5)

    b_true = (rng.random((2, 4, 5, 1)) > 0.5).astype(np.float32)
    b_pred = rng.uniform(0.05, 0.95, (2, 4, 5, 1)).astype(np.float32)
    total = DiceLoss()(b_true, b_pred) + keras.losses.BinaryCrossentropy()(b_true, b_pred)
    assert value(DiceCELoss()(b_true, b_pred)) == pytest.approx(value(total), rel=1e-5)
    assert value(dice_ce_loss(b_true, b_pred)).shape == (2,)


def test_class_balance_weights_by_hand():
    # 4 pixels: class 0 on 3 (share 0.75), class 1 on 1 (share 0.25), class 2 absent.
    y_true = one_hot([[[0, 0], [0, 1]]], 3)
    raw = 1 / np.sqrt(np.array([0.75, 0.25, 0.0]) + 1e-3)
    scale = 0.75 * raw[0] + 0.25 * raw[1]
    weights = value(class_balance_weights(y_true))
    np.testing.assert_allclose(weights, [[[raw[0], raw[0]], [raw[0], raw[1]]]] / scale,
                               rtol=1e-5)
    assert weights.mean() == pytest.approx(1.0)
    # the rarer class weighs sqrt(3) times more (up to the floor of 0.001)
    assert weights[0, 1, 1] / weights[0, 0, 0] == pytest.approx(np.sqrt(0.751 / 0.251))


def test_dice_wce_is_dice_plus_balanced_crossentropy():
    rng = np.random.default_rng(5)
    y_true = one_hot(rng.choice(3, size=(2, 4, 5), p=[0.8, 0.15, 0.05]))
    y_pred = value(keras.ops.softmax(rng.normal(size=(2, 4, 5, 3)).astype(np.float32)))
    pixel_ce = -np.log(np.sum(y_true * y_pred, -1))
    weights = value(class_balance_weights(y_true))
    expected = value(dice_loss(y_true, y_pred)) + (pixel_ce * weights).mean(axis=(1, 2))
    np.testing.assert_allclose(value(dice_ce_loss(y_true, y_pred, balanced=True)), expected,
                               rtol=1e-5)
    loss = get_loss("dice_wce")
    assert (loss.name, loss.balanced) == ("dice_wce", True)
    assert value(loss(y_true, y_pred)) == pytest.approx(expected.mean(), rel=1e-5)
    # the rare class's errors weigh more than in the plain loss
    assert value(loss(y_true, y_pred)) != pytest.approx(value(get_loss("dice_ce")(y_true, y_pred)))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("dice", DiceLoss),
        ("dice_ce", DiceCELoss),
        ("dice+ce", DiceCELoss),
        ("Dice-CE", DiceCELoss),
        ("dice_wce", DiceCELoss),
        ("categorical_crossentropy", keras.losses.CategoricalCrossentropy),
        ("binary_crossentropy", keras.losses.BinaryCrossentropy),
    ],
)
def test_get_loss(name, kind):
    assert isinstance(get_loss(name), kind)


def test_get_loss_unknown_name():
    with pytest.raises(UsageError, match="unknown loss 'jaccard'; expected one of"):
        get_loss("jaccard")


def test_losses_serialise_with_their_smoothing():
    restored = keras.losses.deserialize(keras.losses.serialize(DiceCELoss(smooth=0.5)))
    assert isinstance(restored, DiceCELoss)
    assert (restored.smooth, restored.balanced) == (0.5, False)
    restored = keras.losses.deserialize(keras.losses.serialize(get_loss("dice_wce")))
    assert (restored.name, restored.balanced) == ("dice_wce", True)


# Two batches of one 2 x 3 slice, three classes. Class 1, by hand:
#   batch 1: |T| = 3, |P| = 1, |P & T| = 1 -> Dice 0.5
#   batch 2: |T| = 2, |P| = 4, |P & T| = 2 -> Dice 0.667
#   together: 2 * 3 / (5 + 5) = 0.6 (the mean of the batch values would be 0.583)
TRUE_1 = [[[0, 1, 1], [2, 1, 0]]]
PRED_1 = [[[0, 1, 0], [2, 2, 0]]]
TRUE_2 = [[[1, 1, 0], [0, 0, 0]]]
PRED_2 = [[[1, 1, 1], [1, 0, 0]]]


def test_dice_score_accumulates_over_batches():
    metric = DiceScore(1)
    assert metric.name == "dice_1"
    metric.update_state(one_hot(TRUE_1), soft(PRED_1))
    assert value(metric.result()) == pytest.approx(0.5)
    metric.update_state(one_hot(TRUE_2), soft(PRED_2))
    assert value(metric.result()) == pytest.approx(0.6)

    whole = DiceScore(1)
    whole.update_state(one_hot(TRUE_1 + TRUE_2), soft(PRED_1 + PRED_2))
    assert value(whole.result()) == pytest.approx(0.6)
    labels = dice_per_class(np.array(PRED_1 + PRED_2), np.array(TRUE_1 + TRUE_2), [1])
    assert labels[1] == pytest.approx(0.6)

    metric.reset_state()
    assert value(metric.result()) == pytest.approx(1.0)  # nothing seen: both empty


def test_dice_score_other_class_sparse_targets_and_sample_weight():
    metric = DiceScore(2)
    metric.update_state(np.array(TRUE_1 + TRUE_2)[..., None], soft(PRED_1 + PRED_2))
    # Class 2: |T| = 1, |P| = 2, |P & T| = 1 -> 2/3.
    assert value(metric.result()) == pytest.approx(2 / 3)

    weighted = DiceScore(1)
    weighted.update_state(
        one_hot(TRUE_1 + TRUE_2), soft(PRED_1 + PRED_2), sample_weight=np.array([1.0, 0.0])
    )
    assert value(weighted.result()) == pytest.approx(0.5)


def test_dice_score_single_sigmoid_channel():
    y_true = np.array([1, 0, 1, 1], np.float32).reshape(1, 2, 2, 1)
    y_pred = np.array([0.9, 0.6, 0.4, 0.7], np.float32).reshape(1, 2, 2, 1)
    foreground = DiceScore(1)
    foreground.update_state(y_true, y_pred)
    assert value(foreground.result()) == pytest.approx(4 / 6)  # I = 2, |P| = 3, |T| = 3
    background = DiceScore(0)
    background.update_state(y_true, y_pred)
    assert value(background.result()) == pytest.approx(0.0)
    with pytest.raises(UsageError, match="only classes 0 and 1"):
        DiceScore(2).update_state(y_true, y_pred)


def test_dice_score_config_round_trip():
    metric = DiceScore.from_config(DiceScore(2, threshold=0.3).get_config())
    assert (metric.class_id, metric.threshold, metric.name) == (2, 0.3, "dice_2")
    with pytest.raises(UsageError, match="class_id"):
        DiceScore(-1)


@pytest.mark.parametrize(
    ("num_classes", "metric", "names"),
    [
        (3, "categorical_accuracy", ["categorical_accuracy", "dice_1", "dice_2"]),
        (3, "accuracy", ["categorical_accuracy", "dice_1", "dice_2"]),
        (2, "categorical_accuracy", ["categorical_accuracy", "dice_1"]),
        (1, "categorical_accuracy", ["binary_accuracy", "dice_1"]),
        (1, "binary_accuracy", ["binary_accuracy", "dice_1"]),
    ],
)
def test_make_metrics(num_classes, metric, names):
    assert [m.name for m in make_metrics(num_classes, metric)] == names


def test_make_metrics_bad_input():
    with pytest.raises(UsageError, match="unknown metric 'accurcy'"):
        make_metrics(3, "accurcy")
    with pytest.raises(UsageError, match="num_classes"):
        make_metrics(0)


def test_dice_per_class_by_hand():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    true = np.array([[0, 1, 2], [2, 2, 2]])
    # Class 0: 2*1/(2+1); class 1: 2*1/(2+1); class 2: 2*2/(2+4); class 3 absent in both.
    scores = dice_per_class(pred, true, [0, 1, 2, 3])
    assert scores == pytest.approx({0: 2 / 3, 1: 2 / 3, 2: 2 / 3, 3: 1.0})
    assert all(type(k) is int and type(v) is float for k, v in scores.items())


def test_dice_per_class_volumes():
    true = (np.arange(480).reshape(8, 6, 10) % 3).astype(np.uint8)
    pred = true.copy()
    pred[0] = 0  # 60 voxels, 20 of each class, all now background
    scores = dice_per_class(pred, true, [1, 2])
    # Each class: |T| = 160, |P| = 140, overlap 140.
    assert scores == pytest.approx({1: 280 / 300, 2: 280 / 300})
    assert dice_per_class(np.zeros((2, 3)), np.ones((2, 3)), [1]) == {1: 0.0}
    with pytest.raises(ValueError, match="same grid"):
        dice_per_class(np.zeros((2, 3)), np.zeros((3, 2)), [1])
