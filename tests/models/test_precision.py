"""Training precision follows the hardware; a 16-bit model predicts in float32 where it is slow."""

import keras
import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.models import build_model, precision
from minc_keras.models.info import attach_info, read_info
from minc_keras.models.saving import load_trained


def test_mixed_precision_follows_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(precision, "accelerator", lambda: None)
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: True)
    assert precision.dtype_policy("mixed") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: False)
    with caplog.at_level("INFO", logger="minc_keras.models.precision"):
        assert precision.dtype_policy("mixed") == "float32"
        assert precision.dtype_policy("bfloat16") == "mixed_bfloat16"  # asked for: kept, warned
    assert "no native bfloat16, training in float32" in caplog.text
    assert "`precision` bfloat16 will be much slower than float32 here" in caplog.text
    monkeypatch.setattr(precision, "accelerator", lambda: "cuda:0 (test)")
    assert precision.dtype_policy("mixed") == "mixed_float16"


@pytest.mark.parametrize(("native", "compute"), [(True, "bfloat16"), (False, "float32")])
def test_mixed_precision_training_computes_in_what_the_cpu_has(tmp_path, monkeypatch, native,
                                                               compute):
    """``--mixed-precision`` on a CPU: the saved layers compute in bfloat16 where it is native.

    Whatever this machine has, both cases are run: the CPU's bfloat16 is forced on and off.
    """
    monkeypatch.setattr(precision, "accelerator", lambda: None)
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: native)
    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.5", "0.25", "--model-type", "unet",
                 "--nK", "4", "--epochs", "1", "--batch-size", "4", "--mixed-precision",
                 "--quiet"]) == 0
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model = keras.saving.load_model(target / "model" / "model.keras")  # as saved, unconverted
    network = model.layers[1]  # inside the metadata wrapper
    convolutions = [layer for layer in network.layers
                    if isinstance(layer, keras.layers.Conv2D) and layer.name != "output"]
    assert len(convolutions) > 4
    assert {layer.compute_dtype for layer in convolutions} == {compute}
    assert {layer.variable_dtype for layer in convolutions} == {"float32"}  # weights stay 32
    # the output convolution and its softmax in float32, for a stable loss
    assert network.get_layer("output").compute_dtype == "float32"
    hidden = keras.Model(network.inputs, convolutions[0].output)
    x = np.zeros((1, 32, 32, 1), np.float32)
    assert keras.backend.standardize_dtype(hidden([x]).dtype) == compute  # what it computes in
    assert keras.backend.standardize_dtype(model(x).dtype) == "float32"


def _save_model(path, policy: str) -> keras.Model:
    """A small U-Net built under ``policy``, with its metadata, saved at ``path``."""
    keras.config.set_dtype_policy(policy)
    try:
        core = build_model("unet", num_classes=3, nK=[4, 8])
        model = attach_info(core, {"view": "axial", "multiple": 4, "class_values": [0, 1, 2]})
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.save(path)
    return model


def _policies(model: keras.Model) -> set[str]:
    layers = model.layers[1].layers  # the network inside the metadata wrapper
    return {layer.dtype_policy.name for layer in layers}


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_16_bit_model_predicts_in_float32_where_the_machine_lacks_it(tmp_path, monkeypatch,
                                                                       caplog, policy):
    path = tmp_path / "model.keras"
    saved = _save_model(path, policy)
    monkeypatch.setattr(precision, "accelerator", lambda: None)
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: False)
    with caplog.at_level("INFO", logger="minc_keras.models.precision"):
        model, info = load_trained(path, compile=False)
    assert _policies(model) == {"float32"}
    assert f"computes in {policy[len('mixed_'):]}" in caplog.text
    assert "predicting in float32" in caplog.text
    assert info == read_info(saved)
    for got, want in zip(model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 1)).astype("float32")
    exact = model.predict(x, verbose=0)
    assert exact.dtype == np.float32
    # the same network, computed in 16 bits: the same probabilities to 16-bit rounding
    np.testing.assert_allclose(exact, saved.predict(x, verbose=0), atol=0.05)


def test_a_bfloat16_model_keeps_its_precision_where_the_cpu_has_it(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    _save_model(path, "mixed_bfloat16")
    monkeypatch.setattr(precision, "accelerator", lambda: None)
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: True)
    model, _ = load_trained(path, compile=False)
    assert "mixed_bfloat16" in _policies(model)


def test_a_compiled_16_bit_model_is_converted_with_its_loss(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    _save_model(path, "mixed_float16")
    monkeypatch.setattr(precision, "accelerator", lambda: None)
    model, _ = load_trained(path)  # evaluate's path: loss and metrics too
    assert _policies(model) == {"float32"}
    x = np.zeros((1, 16, 16, 1), np.float32)
    y = keras.utils.to_categorical(np.zeros((1, 16, 16)), 3)
    assert np.isfinite(model.evaluate(x, y, verbose=0))


def test_prediction_config_changes_only_the_slow_policies(monkeypatch):
    monkeypatch.setattr(precision, "accelerator", lambda: None)
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: True)
    serialised = {"module": "keras", "class_name": "DTypePolicy",
                  "config": {"name": "mixed_float16"}, "registered_name": None}
    config = {"layers": [{"config": {"dtype": serialised}},
                         {"config": {"dtype": "mixed_bfloat16"}},
                         {"config": {"dtype": "int32"}}],
              "compile_config": {"loss": {"config": {"dtype": None}}}}
    converted, changed = precision.prediction_config(config)
    assert changed
    assert [layer["config"]["dtype"] for layer in converted["layers"]] == [
        "float32", "mixed_bfloat16", "int32"]
    assert converted["compile_config"] == config["compile_config"]
    assert config["layers"][0]["config"]["dtype"] is serialised  # the input is not changed
