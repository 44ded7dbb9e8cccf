"""Recipes fill in the flags the user did not give; time budget and schedule behave."""

import itertools
import json

import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.cli.parser import parse_args, train_options
from minc_keras.training.callbacks import CosineSchedule, TimeBudget
from minc_keras.training.recipes import RECIPES


def _options(argv):
    return train_options(parse_args(argv))


BASE = ["--source", "s", "--target", "t"]


def test_no_recipe_keeps_the_workshop_defaults():
    options = _options(BASE)
    workshop = _options([*BASE, "--recipe", "workshop"])
    for key in ("model_type", "epochs", "batch_size", "lr", "loss", "views", "augment",
                "augment_atrophy", "calibrate", "time_budget", "schedule"):
        assert getattr(options, key) == getattr(workshop, key), key
    assert options.model_type == "model_0_0"
    assert options.batch_size == 1


@pytest.mark.parametrize("name", ["default", "fast"])
def test_recipe_sets_defaults_and_explicit_flags_win(name):
    options = _options(["run", *BASE, "--recipe", name])
    for key, value in RECIPES[name].values.items():
        assert getattr(options, key) == value, key
    given = _options([*BASE, "--lr", "5e-4", "--recipe", name, "--views", "axial",
                      "--no-augment", "--no-augment-atrophy", "--time-budget", "2"])
    assert given.lr == 5e-4
    assert given.views == ["axial"]
    assert given.augment is False
    assert given.augment_atrophy is False
    assert given.time_budget == 2.0
    assert given.model_type == RECIPES[name].values["model_type"]


def test_recipe_applies_to_train_subcommand():
    options = _options(["train", "--target", "t", "--recipe", "fast", "--epochs", "3"])
    assert options.model_type == "unet"
    assert (options.input_stride, options.nK) == (2, [16])
    assert options.epochs == 3
    full_resolution = _options(["train", "--target", "t", "--recipe", "fast",
                                "--input-stride", "1"])
    assert full_resolution.input_stride == 1
    assert _options(["train", "--target", "t", "--recipe", "workshop"]).input_stride == 1


def test_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, "--recipe", "turbo"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'turbo'" in capsys.readouterr().err


def test_cosine_schedule_warms_up_then_decays_monotonically():
    schedule = CosineSchedule(1e-3, total_steps=1000)
    rates = [schedule.rate(p) for p in np.linspace(0, 1, 201)]
    peak = int(np.argmax(rates))
    assert rates[0] == 0.0
    assert np.isclose(max(rates), 1e-3)
    assert all(a <= b for a, b in itertools.pairwise(rates[:peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(rates[peak:]))
    assert np.isclose(rates[-1], 0.02 * 1e-3)


def test_time_budget_stops_after_the_deadline():
    class Model:
        stop_training = False

    budget = TimeBudget(deadline=0.0)
    budget.set_model(Model())
    budget.on_train_batch_end(0)
    assert budget.model.stop_training
    assert budget.stopped_early
    patient = TimeBudget(deadline=float("inf"))
    patient.set_model(Model())
    patient.on_train_batch_end(0)
    assert not patient.model.stop_training


def test_time_budget_ends_training_early_with_a_checkpoint(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    argv = ["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
            "--label-str", "seg", "--ratios", "0.5", "0.5", "--recipe", "fast",
            "--nK", "4", "--time-budget", "0.05", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no test subjects" in out
    history = json.loads((target / "model" / "history.json").read_text())
    assert history["loss"]  # at least one (partial) epoch was validated and saved
    assert len(history["loss"]) < RECIPES["fast"].values["epochs"]  # the budget stopped it early
    config = json.loads((target / "model" / "config.json").read_text())
    assert config["recipe"] == "fast"
    assert config["augment"] is True
    assert (target / "model" / "model.keras").is_file()


@pytest.mark.parametrize("flags", [("--precision", "bfloat16"), ("--mixed-precision",)])
def test_16_bit_training_saves_a_model_that_predicts_float32(tmp_path, flags):
    import keras

    from minc_keras.models.precision import dtype_policy

    # --mixed-precision: float16 (with loss scaling) on a GPU, bfloat16 on a CPU that has it
    expected = dtype_policy("mixed") if flags[0] == "--mixed-precision" else "mixed_bfloat16"
    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    argv = ["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
            "--label-str", "seg", "--ratios", "0.5", "0.25", "--model-type", "unet",
            "--nK", "4", "--epochs", "1", "--batch-size", "4", *flags, "--quiet"]
    assert main(argv) == 0
    model = keras.saving.load_model(target / "model" / "model.keras")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    policies = {layer.dtype_policy.name for layer in model.layers[1].layers}
    assert expected in policies
    out = model.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-3)


def test_time_budget_is_shared_by_the_views(tmp_path):
    from minc_keras.data.prepare import prepare
    from minc_keras.training import TrainOptions, train

    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    prepare(source, target, input_str="T1w_anat", label_str="seg", ratios=(0.5, 0.5),
            quiet=True)
    options = TrainOptions(model_type="unet", nK=[4], epochs=1000, batch_size=4,
                           views=["axial", "coronal"], time_budget=0.1, schedule="cosine")
    result = train(target, options, quiet=True)
    assert set(result.histories) == {"axial", "coronal"}
    assert all(1 <= len(h["loss"]) < 1000 for h in result.histories.values())
    assert (target / "model" / "model_coronal.keras").is_file()
