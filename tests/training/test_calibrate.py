"""Class offsets fitted on the validation scans: exact Dice, a real correction, stored and used."""

import json

import keras
import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.inference.offsets import apply_offsets
from minc_keras.inference.segmenter import Segmenter, load_segmenter
from minc_keras.models.info import ModelInfo, read_info
from minc_keras.training.calibration import OFFSET_GRID, _DiceCounter, fit_offsets


def _direct_mean_dice(probs, truth, offsets):
    labels = np.argmax(np.log(np.maximum(probs, 1e-12)) + offsets, axis=-1)
    scores = []
    for c in range(1, probs.shape[-1]):
        both = np.sum((labels == c) & (truth == c))
        total = np.sum(labels == c) + np.sum(truth == c)
        if total:
            scores.append(2 * both / total)
    return float(np.mean(scores))


def test_dice_counter_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    # peaked probabilities, as a trained network gives: most voxels are certain
    probs = rng.dirichlet([0.05] * 4, size=(12, 10, 8)).astype(np.float32)
    truth = rng.integers(0, 4, size=(12, 10, 8))
    counter = _DiceCounter(probs, truth, float(OFFSET_GRID.max() - OFFSET_GRID.min()))
    assert 0 < len(counter.truth) < truth.size  # some voxels were set aside as certain
    for _ in range(20):
        offsets = np.concatenate([[0.0], rng.choice(OFFSET_GRID, 3)]).astype(np.float32)
        assert counter.mean_dice(offsets) == pytest.approx(
            _direct_mean_dice(probs, truth, offsets), abs=1e-12)
        # one sweep over a class's offsets scores each value as relabelling would
        c = int(rng.integers(1, 4))
        values = OFFSET_GRID.astype(np.float32)
        swept = counter.sweep(offsets, c, values)
        for value, score in zip(values, swept, strict=True):
            trial = offsets.copy()
            trial[c] = value
            assert score == pytest.approx(_direct_mean_dice(probs, truth, trial), abs=1e-12)


def _over_segmenting_network(truth, rng, bias):
    """Noisy probabilities of a network that multiplies class 1's odds by ``bias``."""
    logits = 3.0 * np.eye(3)[truth] + rng.normal(0, 1.5, (*truth.shape, 3))
    logits[..., 1] += np.log(bias)
    probs = np.exp(logits)
    return (probs / probs.sum(-1, keepdims=True)).astype(np.float32)


def test_offsets_fitted_on_validation_correct_unseen_scans():
    rng = np.random.default_rng(1)
    truths = [rng.choice(3, size=(30, 30, 10), p=[0.6, 0.05, 0.35]) for _ in range(3)]
    probs = [_over_segmenting_network(t, rng, bias=8.0) for t in truths]
    offsets, before, after = fit_offsets(zip(probs[:2], truths[:2], strict=True))
    assert offsets[0] == 0
    assert offsets[1] < -1.0  # the inflated class is shrunk back
    assert after > before + 0.02
    # the third scan took no part in the fit and still gains
    unseen_before = _direct_mean_dice(probs[2], truths[2], np.zeros(3))
    unseen_after = _direct_mean_dice(apply_offsets(probs[2], offsets), truths[2], np.zeros(3))
    assert unseen_after > unseen_before + 0.02


def test_an_unbiased_network_keeps_zero_offsets():
    rng = np.random.default_rng(2)
    truth = rng.choice(3, size=(30, 30, 10), p=[0.5, 0.2, 0.3])
    offsets, before, after = fit_offsets([(np.eye(3, dtype=np.float32)[truth], truth)])
    assert offsets.tolist() == [0, 0, 0]
    assert before == after == 1.0


def test_apply_offsets_renormalises():
    probs = np.random.default_rng(3).dirichlet([1, 1, 1], size=50).astype(np.float32)
    assert apply_offsets(probs, None) is probs
    assert apply_offsets(probs, [0.0, 0.0, 0.0]) is probs
    shifted = apply_offsets(probs, [0.0, -1.0, 0.5])
    np.testing.assert_allclose(shifted.sum(-1), 1.0, rtol=1e-6)
    ratio = (shifted[:, 2] / shifted[:, 0]) / (probs[:, 2] / probs[:, 0])
    np.testing.assert_allclose(ratio, np.exp(0.5), rtol=1e-5)


class _ConstantModel:
    """Stands in for a network: the same probabilities for every pixel."""

    output_shape = (None, None, None, 3)

    def predict_on_batch(self, batch):
        out = np.empty((*batch.shape[:3], 3), np.float32)
        out[:] = [0.2, 0.5, 0.3]
        return out


def test_segmenter_applies_the_stored_offsets():
    info = {"view": "axial", "multiple": 1, "class_offsets": [0.0, -1.0, 0.0]}
    volume = np.ones((4, 5, 6), np.float32)
    calibrated = Segmenter([(_ConstantModel(), info)]).probabilities(volume)
    expected = apply_offsets(np.array([0.2, 0.5, 0.3], np.float32), [0.0, -1.0, 0.0])
    np.testing.assert_allclose(calibrated[1, 2, 3], expected, rtol=1e-6)
    raw = Segmenter([(_ConstantModel(), info)], calibrated=False).probabilities(volume)
    np.testing.assert_allclose(raw[1, 2, 3], [0.2, 0.5, 0.3], rtol=1e-6)


@pytest.mark.parametrize("flag", ["--calibrate", "--no-calibrate"])
def test_recipe_run_calibrates_and_prediction_uses_it(tmp_path, capsys, flag):
    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    argv = ["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
            "--label-str", "seg", "--ratios", "0.5", "0.5", "--recipe", "fast",
            "--nK", "4", "--time-budget", "0.05", "--quiet", flag]
    assert main(argv) == 0
    out = capsys.readouterr().out
    path = target / "model" / "model.keras"
    info = read_info(keras.saving.load_model(path, compile=False))
    config = json.loads((target / "model" / "config.json").read_text())
    assert config["calibrate"] is (flag == "--calibrate")
    summary = json.loads((target / "report" / "summary.json").read_text())
    page = (target / "report" / "report.html").read_text()
    if flag == "--no-calibrate":
        assert "calibrated" not in out
        assert info.class_offsets is None
        assert summary["calibration"] is None
        assert "Class offsets" not in page
        return
    # the recipe trains with simulated atrophy, so atrophied copies join the fit
    assert "calibrated on 2 validation scans and 2 atrophied copies: class offsets label_1 " in out
    assert info.calibration["atrophy_voxels"] == 3.0
    offsets = info.class_offsets
    assert len(offsets) == info.num_outputs == 3
    assert offsets[0] == 0
    assert info.calibration["dice_after"] >= info.calibration["dice_before"]
    assert load_segmenter(path).class_offsets == offsets
    # the run's summary and report show them, by class name
    assert summary["calibration"]["offsets"] == dict(
        zip(info.class_names[1:], offsets[1:], strict=True))
    assert summary["calibration"]["atrophied_copies"] == 2
    assert "<h3>Class offsets (--calibrate)</h3>" in page
    assert "2 validation scans and 2 atrophied copies of them" in page
    assert "enlarged by 3 voxels" in page
    # prediction applies them and says so beside each output
    assert main(["predict", "--model", str(path), "-o", str(tmp_path / "out"), "--quiet",
                 str(next(source.glob("sub-01/*T1w_anat*")))]) == 0
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert sidecar["class_offsets"] == offsets
    # the model still resumes and loads with its optimizer after the metadata rewrite
    assert keras.saving.load_model(path).optimizer is not None


class _Cache:
    """Two validation scans, a dark class 1 inside class 2 (stands in for a SliceCache)."""

    def __init__(self, foreground_classes: int):
        labels = np.zeros((24, 24, 12), np.uint8)
        labels[4:20, 4:20, 2:10] = 2 if foreground_classes > 1 else 1
        if foreground_classes > 1:
            labels[9:15, 9:15, 4:8] = 1
        self.labels = labels
        self.image_data = np.choose(labels, [0.0, 0.2, 0.7]).astype(np.float32)

    def by_category(self, category):
        return [0, 1] if category == "validate" else [2]

    def image(self, index):
        return self.image_data

    def label(self, index):
        return self.labels

    def classes(self, labels):
        return np.asarray(labels)


class _Segmenter:
    """Labels by intensity, so it has no class bias for the offsets to correct."""

    def __init__(self):
        self.info = ModelInfo(class_values=[0, 1, 2], num_outputs=3)

    def probabilities(self, image, batch_size=8):
        return np.eye(3, dtype=np.float32)[np.digitize(image, [0.1, 0.45])]


@pytest.mark.parametrize("foreground_classes", [2, 1])
def test_atrophy_calibration_fits_on_enlarged_copies_too(monkeypatch, tmp_path,
                                                          foreground_classes):
    import minc_keras.training.calibration as calibrate

    cache, seen, stored = _Cache(foreground_classes), [], {}
    real_fit = calibrate.fit_offsets
    monkeypatch.setattr(calibrate, "load_segmenter", lambda *a, **k: _Segmenter())
    monkeypatch.setattr(calibrate, "update_info",
                        lambda path, changes: stored.update(changes))
    monkeypatch.setattr(calibrate, "fit_offsets",
                        lambda scans: real_fit(seen.append(s) or s for s in scans))
    result = calibrate.calibrate_model(tmp_path / "model.keras", cache, atrophy_voxels=2.0)
    if foreground_classes == 1:  # a brain mask: nothing darker to enlarge, no copies
        assert len(seen) == 2
        assert result.atrophied == 0
        assert stored["calibration"]["atrophied_copies"] == 0
        return
    assert len(seen) == 4
    assert result.atrophied == 2
    assert "2 validation scans and 2 atrophied copies" in result.line()
    assert stored["calibration"]["atrophy_voxels"] == 2.0
    for (_, plain), (_, grown) in (seen[0:2], seen[2:4]):
        assert grown.shape == plain.shape
        assert (grown == 1).sum() > 1.5 * (plain == 1).sum()  # the ventricles enlarged
    # the stand-in network follows intensity, so the copies keep the offsets at zero
    assert result.offsets == [0.0, 0.0, 0.0]
