"""Crash-safe training: kill -9 a real training process, then ``train --resume``.

Also determinism: the same inputs and ``--seed`` give the same split and, on the CPU,
the same trained weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main

EPOCHS = 3
TRAIN_FLAGS = ["--model-type", "model_0_0", "--epochs", str(EPOCHS), "--batch-size", "2",
               "--lr", "1e-3", "--quiet"]


def _prepare(source: Path, target: Path) -> None:
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25", "--quiet"]) == 0


def _state(target: Path) -> dict | None:
    try:
        return json.loads((target / "model" / "checkpoints" / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _weights(path: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in keras.saving.load_model(path).get_weights()]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("resume") / "source", n_subjects=6)


@pytest.fixture(scope="module")
def uninterrupted(source, tmp_path_factory) -> Path:
    """The same training, never killed: what a resumed run should end with."""
    target = tmp_path_factory.mktemp("reference") / "run"
    _prepare(source, target)
    assert main(["train", "--target", str(target), *TRAIN_FLAGS]) == 0
    return target


#: Run in the child: the CLI, with every fit given a callback that, at the second batch of
#: the second epoch (after the first checkpoint), writes the file ``argv[1]`` and waits there
#: to be killed.
KILL_POINT = textwrap.dedent("""
    import sys, time
    import keras
    from minc_keras.cli.main import main

    class KillPoint(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if (self.epoch, batch) == (1, 1):
                open(sys.argv[1], "w").close()
                time.sleep(600)

    fit = keras.Model.fit

    def fit_to_the_kill_point(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[*(callbacks or []), KillPoint()], **kwargs)

    keras.Model.fit = fit_to_the_kill_point
    sys.exit(main(sys.argv[2:]))
""")


def test_killed_training_resumes_where_it_stopped(source, uninterrupted, tmp_path, capsys):
    target = tmp_path / "run"
    _prepare(source, target)
    reached = tmp_path / "reached"
    command = [sys.executable, "-c", KILL_POINT, str(reached), "train", "--target", str(target),
               *TRAIN_FLAGS]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not reached.exists():  # the child waits mid-way through the second epoch
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the kill point not reached after 300 s"
            time.sleep(0.02)
    finally:
        process.kill()  # SIGKILL: nothing of the child runs after this
        process.wait()
    killed_at = _state(target)["epochs_done"]
    assert killed_at == 1  # killed in the second epoch, after its first checkpoint
    history_before = json.loads((target / "model" / "history.json").read_text())

    # a plain rerun does not mistake the interrupted model for a finished one
    capsys.readouterr()
    assert main(["train", "--target", str(target), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(["train", "--target", str(target), "--resume", "--quiet"]) == 0
    state = _state(target)
    assert state["complete"]
    assert state["epochs_done"] == EPOCHS
    history = json.loads((target / "model" / "history.json").read_text())
    assert len(history["loss"]) == EPOCHS
    for key, values in history_before.items():  # the curves carry on from the checkpoint
        assert history[key][:killed_at] == values[:killed_at]
    last = keras.saving.load_model(target / "model" / "checkpoints" / "last.keras")
    reference = keras.saving.load_model(uninterrupted / "model" / "checkpoints" / "last.keras")
    assert int(last.optimizer.iterations) == int(reference.optimizer.iterations)
    # weights, optimizer moments, data order: the resumed run ends where the uninterrupted one did
    reference_history = json.loads((uninterrupted / "model" / "history.json").read_text())
    np.testing.assert_allclose(history["loss"], reference_history["loss"], rtol=1e-4)
    for ours, theirs in zip(last.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert not list((target / "model").rglob(".*.tmp*")), "temporary files left behind"


class _Killed(BaseException):
    """Stands for a SIGKILL at one exact point (outside the reach of any except clause)."""


def test_a_kill_between_checkpoint_and_state_resumes_from_the_checkpoint(
        source, uninterrupted, tmp_path, monkeypatch):
    """The checkpoint of epoch 2 is saved, its state file is not: resume at epoch 2."""
    from minc_keras.training import callbacks as train_module

    target = tmp_path / "run"
    _prepare(source, target)
    write = train_module.write_text_atomic

    def killed_before_state_2(path, text, **kwargs):
        if path.name == "state.json" and json.loads(text)["epochs_done"] == 2:
            raise _Killed
        return write(path, text, **kwargs)

    monkeypatch.setattr(train_module, "write_text_atomic", killed_before_state_2)
    with pytest.raises(_Killed):
        main(["train", "--target", str(target), *TRAIN_FLAGS])
    monkeypatch.setattr(train_module, "write_text_atomic", write)
    assert _state(target)["epochs_done"] == 1  # one behind the checkpoint

    assert main(["train", "--target", str(target), "--resume", "--quiet"]) == 0
    assert _state(target)["epochs_done"] == EPOCHS
    last = keras.saving.load_model(target / "model" / "checkpoints" / "last.keras")
    reference = keras.saving.load_model(uninterrupted / "model" / "checkpoints" / "last.keras")
    assert int(last.optimizer.iterations) == int(reference.optimizer.iterations)
    for ours, theirs in zip(last.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    history = json.loads((target / "model" / "history.json").read_text())
    assert len(history["loss"]) == EPOCHS
    assert "checkpoint_progress" not in json.dumps(
        keras.saving.load_model(target / "model" / "model.keras").get_config())


def test_resume_of_a_finished_training_keeps_it(uninterrupted, capsys):
    before = _weights(uninterrupted / "model" / "model.keras")
    assert main(["train", "--target", str(uninterrupted), "--resume", "--quiet"]) == 0
    after = _weights(uninterrupted / "model" / "model.keras")
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_resume_with_nothing_to_resume_is_a_clear_error(source, tmp_path, capsys):
    target = tmp_path / "run"
    _prepare(source, target)
    capsys.readouterr()
    assert main(["train", "--target", str(target), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err
    assert "config.json" in err
    assert "Traceback" not in err


def test_resume_and_clobber_together_are_refused(uninterrupted, capsys):
    assert main(["train", "--target", str(uninterrupted), "--resume", "--clobber"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_same_seed_gives_the_same_split_and_weights(source, uninterrupted, tmp_path):
    target = tmp_path / "again"
    _prepare(source, target)
    assert ((target / "report" / "images.csv").read_text()
            == (uninterrupted / "report" / "images.csv").read_text())
    assert main(["train", "--target", str(target), *TRAIN_FLAGS]) == 0
    ours = _weights(target / "model" / "model.keras")
    theirs = _weights(uninterrupted / "model" / "model.keras")
    # the CPU backend is deterministic for a fixed seed and thread count: bit for bit
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_another_seed_gives_another_split(source, uninterrupted, tmp_path):
    target = tmp_path / "other"
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25", "--seed", "7",
                 "--quiet"]) == 0
    assert ((target / "report" / "images.csv").read_text()
            != (uninterrupted / "report" / "images.csv").read_text())


def test_resume_retrains_only_the_unfinished_view(source, tmp_path, capsys):
    target = tmp_path / "views"
    _prepare(source, target)
    flags = ["--model-type", "model_0_0", "--epochs", "1", "--batch-size", "8", "--quiet",
             "--views", "axial,coronal"]
    assert main(["train", "--target", str(target), *flags]) == 0
    axial = target / "model" / "model.keras"
    axial_bytes = axial.read_bytes()
    # as if killed while the coronal view trained its first epoch
    (target / "model" / "model_coronal.keras").unlink()
    (target / "model" / "checkpoints" / "state_coronal.json").unlink()
    capsys.readouterr()
    assert main(["train", "--target", str(target), "--quiet"]) == 2
    assert "coronal view" in capsys.readouterr().err
    assert main(["train", "--target", str(target), "--resume", "--quiet"]) == 0
    assert axial.read_bytes() == axial_bytes  # the finished view is kept as it was
    assert (target / "model" / "model_coronal.keras").exists()
    assert json.loads((target / "model" / "checkpoints" / "state_coronal.json").read_text())[
        "complete"]
