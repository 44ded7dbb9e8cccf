"""Compiled training steps: compiled up front, trained as eager ones, counted in the budget."""

import json
import logging

import keras
import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.models import get_loss
from minc_keras.models.space_to_depth import DepthToSpace, SpaceToDepth
from minc_keras.training import compilation as jit


class _Batches(keras.utils.PyDataset):
    """Random slices whose class is their intensity band: something a few steps learn."""

    def __init__(self, seed: int, size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.x = rng.random((12, *size, 1)).astype(np.float32)
        self.y = np.eye(3, dtype=np.float32)[(self.x[..., 0] * 2.99).astype(int)]

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i):
        return self.x[4 * i:4 * i + 4], self.y[4 * i:4 * i + 4]


def _model() -> keras.Model:
    """A small network with the U-Net's kinds of layers, for slices of any even size."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 1))
    x = SpaceToDepth(2)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2)(x)
    x = DepthToSpace(2)(keras.layers.Conv2D(12, 1)(x))
    model = keras.Model(inputs, keras.layers.Activation("softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=get_loss("categorical_crossentropy"))
    return model


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_compiled_step_learns_nothing_itself_then_trains_as_the_eager_one(tmp_path):
    import torch

    eager, compiled = _model(), _model()
    before = _weights(compiled)
    seconds, ok = jit.compile_train_step(compiled, _Batches(0))
    if not ok:
        try:  # a machine that cannot compile at all (no C++ compiler) skips; others fail
            torch.compile(lambda x: x + 1.0)(torch.ones(2))
        except Exception as error:
            pytest.skip(f"torch.compile does not work on this machine: {error}")
        pytest.fail(f"torch.compile works here, but not on the training step: {jit._failure}")
    assert seconds > 0
    assert _same(before, compiled.get_weights())
    assert int(compiled.optimizer.iterations.numpy()) == 0
    # every step must run the graph compiled up front, none compile another
    with torch._dynamo.config.patch(error_on_recompile=True):
        fits = [m.fit(_Batches(0), validation_data=_Batches(1), epochs=3, shuffle=False,
                      verbose=0)
                for m in (eager, compiled)]
    eager_loss, compiled_loss = (np.array(f.history["loss"]) for f in fits)
    assert eager_loss[-1] < eager_loss[0]
    np.testing.assert_allclose(compiled_loss, eager_loss, rtol=1e-3)
    np.testing.assert_allclose(fits[1].history["val_loss"], fits[0].history["val_loss"],
                               rtol=1e-3)
    compiled.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").jit_compile is False  # predicts eagerly
    # the next view: another model of the same code, other slice sizes (compiled for
    # symbolic sizes, this failed in inductor)
    assert jit.compile_train_step(_model(), _Batches(0, (32, 48)))[1], jit._failure


def test_where_compiling_fails_the_model_trains_eagerly_as_it_was(monkeypatch, caplog):
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("Exception encountered when calling Functional.call().\n\n"
                           "\x1b[1mCompiler: cc is not found.\x1b[0m\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    monkeypatch.setattr(jit, "_failure", None)
    model = _model()
    before = _weights(model)
    with caplog.at_level(logging.WARNING, logger="minc_keras.training.compilation"):
        assert jit.compile_train_step(model, _Batches(0))[1] is False
        assert jit.compile_train_step(_model(), _Batches(0))[1] is False  # not tried again
    assert caplog.text.count("torch.compile does not work here (Compiler: cc is not found.)") == 1
    assert _same(before, model.get_weights())
    history = model.fit(_Batches(0), epochs=2, shuffle=False, verbose=0).history
    assert history["loss"][1] < history["loss"][0]


def test_compiling_counts_against_the_time_budget(tmp_path, monkeypatch, caplog):
    from minc_keras.data.prepare import prepare
    from minc_keras.training import trainer as train_module

    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    prepare(source, target, input_str="T1w_anat", label_str="seg", ratios=(0.5, 0.5),
            quiet=True)
    # a compile that takes longer than the whole budget (6 s): training still runs one
    # batch and saves a checkpoint, and the time is on the record
    monkeypatch.setattr(train_module, "compile_train_step", lambda model, data: (100.0, True))
    options = train_module.TrainOptions(model_type="unet", nK=[4], epochs=1000, batch_size=4,
                                        time_budget=0.1, schedule="cosine", jit_compile=True)
    with caplog.at_level(logging.INFO, logger="minc_keras.training.trainer"):
        result = train_module.train(target, options, quiet=True)
    assert "axial view: training step compiled in 100 s" in caplog.text
    assert "compiling took 100 s of its 6 s" in caplog.text
    assert len(result.history["loss"]) == 1
    assert result.seconds >= 100.0
    assert (target / "model" / "model.keras").is_file()
    state = json.loads((target / "model" / "checkpoints" / "state.json").read_text())
    assert state["complete"]
    assert state["seconds"] >= 100.0
    assert json.loads((target / "model" / "config.json").read_text())["jit_compile"] is True


def test_jit_compile_flag_is_off_unless_given():
    from minc_keras.cli.parser import parse_args, train_options

    base = ["train", "--target", "t"]
    assert train_options(parse_args(base)).jit_compile is False
    assert train_options(parse_args([*base, "--jit-compile"])).jit_compile


def test_the_compile_cache_goes_where_it_survives_a_reboot(tmp_path, monkeypatch):
    from minc_keras.training.compilation import keep_compile_cache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert keep_compile_cache() == str(tmp_path / "cache" / "minc-keras" / "torchinductor")
    assert (tmp_path / "cache" / "minc-keras" / "torchinductor").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert keep_compile_cache() == str(tmp_path / "mine")  # the user's choice wins


@pytest.mark.parametrize(("recipe", "advice"), [("default", False), (None, True)])
def test_a_slow_compile_never_advises_against_the_recipes_own_setting(monkeypatch, caplog,
                                                                      recipe, advice):
    from minc_keras.training import trainer

    monkeypatch.setattr(trainer, "compile_train_step", lambda model, part: (90.0, True))
    with caplog.at_level("WARNING", logger="minc_keras.training.trainer"):
        spent = trainer._compile_steps(None, [object()], ["axial"], 200.0, recipe=recipe)
    assert spent == 90.0
    assert "compiling took 90 s of its 200 s" in caplog.text
    assert ("without `jit_compile`" in caplog.text) is advice
