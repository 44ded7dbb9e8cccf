"""The model zoo: workshop parameter counts, forward passes, options, registry, save/load."""

from pathlib import Path

import keras
import numpy as np
import pytest

from minc_keras.core.errors import UsageError
from minc_keras.models import (
    MODEL_NAMES,
    DiceCELoss,
    available_models,
    build_model,
    describe_models,
    get_loss,
    make_metrics,
    register_model,
    required_multiple,
    symmetric_dilations,
    unregister_model,
)

# The workshop slides' counts for 3 classes, recomputed by hand in zoo.py's docstring.
WORKSHOP_COUNTS = {
    "model_0_0": 71_987,
    "model_1_0": 192_211,
    "model_2_0": 199_219,
    "model_3_0": 21_043,
    "model_4_0": 532_435,
}

BATCH = np.random.default_rng(0).random((2, 32, 48, 1), dtype=np.float32)


@pytest.mark.parametrize(("name", "count"), WORKSHOP_COUNTS.items())
def test_workshop_parameter_counts(name, count):
    assert build_model(name, num_classes=3).count_params() == count


def test_describe_models_lists_every_model_with_counts():
    rows = {row["name"]: row for row in describe_models(3)}
    assert set(rows) == set(MODEL_NAMES)
    for name, count in WORKSHOP_COUNTS.items():
        assert rows[name]["parameters"] == count
    assert rows["unet"]["required_multiple"] == 8
    assert "5x5" in rows["model_4_0"]["layers"]


def test_dropout_layers_only_where_the_rate_is_positive():
    def dropouts(model):
        return sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers)

    assert dropouts(build_model("model_0_0", num_classes=3)) == 0
    assert dropouts(build_model("model_4_0", num_classes=3)) == 9
    assert dropouts(build_model("custom", num_classes=3, nK=[4, 4], drop_out=0.5)) == 2


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("custom", {"nK": [4, 8, 6], "kernel_size": 5, "drop_out": 0.2, "n_dil": [1, 2, 1]}),
        ("custom", {"nK": [4, 4], "n_dil": [3]}),
        ("dil", {"nK": [4] * 5}),
        ("unet", {"nK": [4]}),
        ("unet", {}),
    ],
)
def test_forward_pass_keeps_the_slice_size_and_sums_to_one(name, options):
    model = build_model(name, num_classes=3, **options)
    out = keras.ops.convert_to_numpy(model(BATCH, training=False))
    assert out.shape == (2, 32, 48, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_custom_options_reach_the_layers():
    model = build_model("custom", num_classes=2, nK=[5, 7], kernel_size=3, n_dil=[1, 4])
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [5, 7, 2]
    assert [c.dilation_rate for c in convs] == [(1, 1), (4, 4), (1, 1)]
    assert model.count_params() == (9 * 5 + 5) + (9 * 5 * 7 + 7) + (7 * 2 + 2)


def test_dil_defaults_to_symmetric_dilations():
    model = build_model("dil", num_classes=3)
    rates = [
        layer.dilation_rate[0] for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    ]
    assert rates == [1, 2, 4, 8, 4, 2, 1, 1]
    assert symmetric_dilations(6) == [1, 2, 4, 4, 2, 1]
    assert model.count_params() < build_model("model_0_0", num_classes=3).count_params()


def test_unet_requires_a_multiple_of_eight():
    assert required_multiple("unet") == required_multiple("unet3d") == 8
    assert all(required_multiple(n) == 1 for n in MODEL_NAMES if not n.startswith("unet"))
    with pytest.raises(UsageError, match=r"30 x 32 .* multiples of 8"):
        build_model("unet", num_classes=3, input_shape=(30, 32, 1))
    fixed = build_model("unet", num_classes=3, input_shape=(32, 48, 1), nK=[2])
    assert fixed.output_shape == (None, 32, 48, 3)
    model = build_model("unet", num_classes=3, nK=[2])
    with pytest.raises(UsageError, match="multiples of 8"):
        model(np.zeros((1, 36, 48, 1), np.float32))


@pytest.mark.parametrize("name", ["model_3_0", "unet"])
def test_sigmoid_binary_output(name):
    model = build_model(name, num_classes=1, activation_output="sigmoid")
    out = keras.ops.convert_to_numpy(model(BATCH))
    assert out.shape == (2, 32, 48, 1)
    assert np.all((out > 0) & (out < 1))


def test_user_registered_builder():
    seen = {}

    def tiny(input_shape, num_classes, **options):
        seen.update(options)
        inputs = keras.Input(input_shape)
        outputs = keras.layers.Conv2D(num_classes, 1, activation=options["activation_output"])(
            inputs
        )
        return keras.Model(inputs, outputs)

    register_model("tiny", tiny, required_multiple=4)
    try:
        model = build_model("tiny", num_classes=2, nK=[3])
        assert "tiny" in available_models()
        assert required_multiple("tiny") == 4
        assert seen == {"activation_hidden": "relu", "activation_output": "softmax", "nK": [3]}
        assert model.count_params() == 4
        with pytest.raises(UsageError, match="built-in"):
            register_model("unet", tiny)
    finally:
        unregister_model("tiny")
    assert "tiny" not in available_models()


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(UsageError, match=r"unknown model 'model_9_9'.*model_0_0.*unet"):
        build_model("model_9_9", num_classes=3)
    with pytest.raises(UsageError, match="unknown model"):
        required_multiple("nope")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nK": []}, "nK must be a non-empty list"),
        ({"nK": [16, 0]}, r"nK .* got \[16, 0\]"),
        ({"nK": [16, -2]}, "positive integers"),
        ({"kernel_size": 0}, "kernel_size must be a positive integer, got 0"),
        ({"drop_out": 1.0}, r"drop_out must be a rate in \[0, 1\), got 1.0"),
        ({"drop_out": -0.1}, "drop_out"),
        ({"activation_hidden": "relux"}, "activation_hidden 'relux' is not a Keras activation"),
        ({"activation_output": "softmaxx"}, "activation_output"),
        ({"n_dil": [1, 2, 3]}, "3 dilation rates for 2 layers"),
        ({"n_dil": [0]}, "n_dil"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 1}, "use 'sigmoid'"),
        ({"input_shape": (32, 1)}, "input_shape"),
    ],
)
def test_bad_options_raise_usage_error(options, message):
    kwargs = {"num_classes": 3, "nK": [4, 4], **options}
    with pytest.raises(UsageError, match=message):
        build_model("custom", **kwargs)


def test_workshop_models_ignore_layer_options_with_a_warning(caplog):
    model = build_model("model_0_0", num_classes=3, nK=[4])
    assert model.count_params() == WORKSHOP_COUNTS["model_0_0"]
    assert "ignoring nK=[4]" in caplog.text


@pytest.mark.parametrize(
    ("name", "num_classes", "activation", "options"),
    [
        ("custom", 3, "softmax", {"nK": [4, 4], "drop_out": 0.1}),
        ("unet", 1, "sigmoid", {"nK": [2]}),
    ],
)
def test_fit_save_and_reload_with_plain_load_model(
    tmp_path, name, num_classes, activation, options
):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.random((4, 16, 24, 1), dtype=np.float32)
    if num_classes == 1:
        y = (x > 0.5).astype(np.float32)
    else:
        y = np.eye(num_classes, dtype=np.float32)[(x[..., 0] * num_classes).astype(int)]
    model = build_model(name, num_classes=num_classes, activation_output=activation, **options)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=get_loss("dice_ce"),
        metrics=make_metrics(num_classes),
    )
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    path = tmp_path / "m.keras"
    model.save(path)

    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    assert isinstance(loaded.loss, DiceCELoss)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert "dice_1" in after
    for key, value in before.items():
        assert after[key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_unet_filters_per_level_set_its_depth():
    model = build_model("unet", num_classes=3, nK=[2, 4, 6, 8, 10])
    check = model.get_layer("check_size")
    assert check.multiple == 16  # four poolings
    assert model.get_layer("enc4_conv2").filters == 10
    assert model.get_layer("dec0_conv2").filters == 2
    assert tuple(model(np.zeros((1, 32, 48, 1), np.float32)).shape) == (1, 32, 48, 3)
    with pytest.raises(UsageError, match="multiples of 16"):
        model(np.zeros((1, 24, 48, 1), np.float32))


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_unet_channels_first_inside_gives_the_same_outputs(upsampling):
    from minc_keras.models.unet import build_unet

    shape = (None, None, 1)
    last = build_unet(shape, 3, nK=[4], upsampling=upsampling, channels_first=False)
    first = build_unet(shape, 3, nK=[4], upsampling=upsampling, channels_first=True)
    assert first.count_params() == last.count_params()
    first.set_weights(last.get_weights())  # Keras keeps kernels in one layout for both
    x = np.random.default_rng(0).random((2, 32, 48, 1), dtype=np.float32)
    expected = last.predict_on_batch(x)
    assert expected.shape == (2, 32, 48, 3)
    assert expected.std() > 0
    np.testing.assert_allclose(first.predict_on_batch(x), expected, atol=1e-5)
    assert np.allclose(first.predict_on_batch(x).sum(axis=-1), 1)  # softmax over classes


@pytest.mark.parametrize(("activation", "classes"), [("softmax", 3), ("sigmoid", 1)])
def test_conv_stack_channels_first_inside_gives_the_same_outputs(activation, classes):
    from minc_keras.models import conv_stack

    options = {"nK": [4, 6], "kernel_size": 3, "dilations": [1, 2], "drop_out": 0.2,
               "activation_output": activation}
    last = conv_stack((None, None, 1), classes, channels_first=False, **options)
    first = conv_stack((None, None, 1), classes, channels_first=True, **options)
    assert "to_channels_first" in [layer.name for layer in first.layers]
    assert first.count_params() == last.count_params()
    first.set_weights(last.get_weights())
    x = np.random.default_rng(1).random((2, 20, 28, 1), dtype=np.float32)
    expected = last.predict_on_batch(x)
    assert expected.shape == (2, 20, 28, classes)
    assert expected.std() > 0
    np.testing.assert_allclose(first.predict_on_batch(x), expected, atol=1e-5)


# The counts the README and docs/tutorial.md print: the zoo's U-Nets for 3 classes, and the
# recipes' network (the zoo's unet at half resolution, --input-stride 2) for 3 and 4 classes.
UNET_COUNTS = {"unet": 483_891, "unet3d": 1_402_707}
RECIPE_COUNTS = {3: 484_476, 4: 484_544}
TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


@pytest.mark.parametrize(("name", "count"), UNET_COUNTS.items())
def test_the_unets_parameter_counts_as_printed(name, count, capsys):
    from minc_keras.cli.main import main

    assert build_model(name, num_classes=3).count_params() == count
    assert main(["models", "--num-classes", "3"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows[name] == f"{count:,}"


def test_the_tutorials_model_list_is_what_the_command_prints(capsys):
    from minc_keras.cli.main import main

    command = "$ minc-keras models --num-classes 3\n"
    text = TUTORIAL.read_text(encoding="utf-8")
    assert command in text, f"{TUTORIAL} no longer shows `{command.strip()}`"
    shown = text.split(command, 1)[1].split("```", 1)[0].strip().splitlines()
    assert main(["models", "--num-classes", "3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.rstrip() for line in shown] == [line.rstrip() for line in printed]
    assert f"{RECIPE_COUNTS[4]:,} parameters for 4 classes" in " ".join(text.split())


@pytest.mark.parametrize(("classes", "count"), RECIPE_COUNTS.items())
def test_the_recipes_network_parameter_count(classes, count):
    assert build_model("unet", num_classes=classes, input_stride=2).count_params() == count


def test_the_default_recipe_builds_the_network_counted(tmp_path, capsys):
    """``run --recipe default --make-model-only``: one network shared by the three views."""
    from synthetic import write_dataset

    from minc_keras.cli.main import main
    from minc_keras.inference.segmenter import load_segmenter
    from minc_keras.io import Volume, read_volume, write_volume

    source = write_dataset(tmp_path / "source", n_subjects=4, fmt="nii")
    for path in source.glob("*/*seg*"):  # a fourth class: half of the core
        labels = read_volume(path, label=True)
        data = np.asarray(labels.data).copy()
        data[: data.shape[0] // 2][data[: data.shape[0] // 2] == 2] = 3
        write_volume(Volume(data, labels.affine), path, clobber=True)
    target = tmp_path / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--ratios", "0.5", "0.25", "--recipe", "default",
                 "--make-model-only", "--quiet"]) == 0
    assert f"({RECIPE_COUNTS[4]:,} parameters)" in capsys.readouterr().out
    segmenter = load_segmenter(target / "model" / "model.keras")
    assert segmenter.views == ["axial", "coronal", "sagittal"]
    assert segmenter.count_params() == RECIPE_COUNTS[4]
