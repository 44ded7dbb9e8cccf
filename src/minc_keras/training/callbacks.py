"""The Keras callbacks of a training: checkpoints, epoch order, time, learning rate, progress."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from minc_keras.core.atomic import atomic_output, write_text_atomic
from minc_keras.models.info import info_layer
from minc_keras.training.checkpoints import CHECKPOINT_KEY


class BestAndLast(keras.callbacks.Callback):
    """Save the best-on-validation model and the last checkpoint, atomically, each epoch.

    The last checkpoint holds the optimizer state; ``state`` (a JSON file beside it)
    records the epochs done, the best monitored value and the training seconds spent, so
    that a resumed training can carry on where a killed run stopped. The checkpoint also
    carries that record in its info (:data:`~minc_keras.training.checkpoints.CHECKPOINT_KEY`),
    which wins on resume (:mod:`minc_keras.training.checkpoints`).

    Parameters
    ----------
    best, last, state, history_path : Path
        The model file, the last checkpoint, its progress record, the learning curves.
    monitor : str
        The logged value whose lowest marks the best model.
    resumed : dict, optional
        The progress record of an interrupted run to carry on from.
    history : dict, optional
        The learning curves up to ``resumed``.
    """

    def __init__(self, best: Path, last: Path, state: Path, history_path: Path, monitor: str,
                 *, resumed: dict | None = None, history: dict | None = None) -> None:
        super().__init__()
        self.best, self.last, self.history_path, self.monitor = best, last, history_path, monitor
        self.state_path = state
        resumed = resumed or {}
        self.best_value = float(resumed.get("best_value", np.inf))
        self.seconds_before = float(resumed.get("seconds", 0.0))
        self.history: dict[str, list[float]] = history or {}
        self.start = time.perf_counter()
        self.epochs_done = int(resumed.get("epochs_done", 0))

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Training seconds spent, earlier runs included."""
        return self.seconds_before + time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        value = float(logs.get(self.monitor, logs.get("loss", np.inf)))
        if value < self.best_value or not self.best.exists():
            self.best_value = value
            with atomic_output(self.best, clobber=True) as tmp:
                self.model.save(tmp)
        write_text_atomic(self.history_path, json.dumps(self.history, indent=1))
        self.epochs_done = epoch + 1
        # the checkpoint carries its own progress: a kill after it is saved but before the
        # state file is would otherwise resume its weights with the epoch before's count
        progress = self.progress(complete=False)
        info_layer(self.model).info[CHECKPOINT_KEY] = progress
        try:
            with atomic_output(self.last, clobber=True) as tmp:
                self.model.save(tmp)
        finally:
            info_layer(self.model).info.pop(CHECKPOINT_KEY)
        write_text_atomic(self.state_path, json.dumps(progress, indent=1))

    def progress(self, *, complete: bool) -> dict:
        """Epochs done, best monitored value, training seconds, and whether it has ended."""
        return {"epochs_done": self.epochs_done, "best_value": self.best_value,
                "seconds": self.seconds, "complete": complete}

    def write_state(self, *, complete: bool) -> None:
        """Record progress; ``complete`` once training of this view has ended."""
        write_text_atomic(self.state_path, json.dumps(self.progress(complete=complete),
                                                      indent=1))


class NamedProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, with each class's Dice named by the class (``dice_GM``).

    The metrics keep their names ``dice_<class id>`` (``history.json`` and every callback
    see those); only what is printed is renamed, from a copy of the logs.

    Parameters
    ----------
    class_names : list of str
        A name per class id, background first.
    """

    #: Printing a copy of the logs is as safe off the training thread as Keras' own bar,
    #: which Keras dispatches asynchronously: this one is dispatched the same way.
    async_safe = True

    def __init__(self, class_names: list[str]) -> None:
        super().__init__()
        self.shown = {f"dice_{k}": f"dice_{name}" for k, name in enumerate(class_names) if k}

    def renamed(self, logs: dict | None) -> dict | None:
        """A copy of ``logs`` with the Dice keys (``dice_1``, ``val_dice_1``) named.

        >>> NamedProgress(["background", "GM"]).renamed({"loss": 1, "val_dice_1": 0.5})
        {'loss': 1, 'val_dice_GM': 0.5}
        """
        if logs is None:
            return None
        names = {**self.shown, **{f"val_{k}": f"val_{v}" for k, v in self.shown.items()}}
        return {names.get(key, key): value for key, value in logs.items()}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self.renamed(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self.renamed(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self.renamed(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self.renamed(logs))


class EpochOrder(keras.callbacks.Callback):
    """Give each epoch the slice order and augmentation of its number, resumed runs too."""

    def __init__(self, dataset) -> None:
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


class TimeBudget(keras.callbacks.Callback):
    """Stop training (after the current batch) once ``deadline`` (perf_counter) has passed."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.stopped_early = False

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() >= self.deadline:
            self.stopped_early = True
            self.model.stop_training = True


class CosineSchedule(keras.callbacks.Callback):
    """Linear warm-up, then cosine decay to ``floor * lr``, by time or by step.

    With ``seconds`` the position in the schedule is the elapsed share of that time
    budget; otherwise it is the share of ``total_steps`` done.
    """

    WARMUP = 0.03

    def __init__(self, lr: float, *, seconds: float | None = None, total_steps: int = 1,
                 floor: float = 0.02, seconds_done: float = 0.0, steps_done: int = 0) -> None:
        super().__init__()
        self.lr, self.seconds, self.total_steps, self.floor = lr, seconds, total_steps, floor
        self.seconds_done = seconds_done  # spent by an earlier, interrupted run
        self.start = time.perf_counter()
        self.step = steps_done

    def progress(self) -> float:
        """Share of the schedule done, 0 to 1."""
        if self.seconds:
            elapsed = self.seconds_done + time.perf_counter() - self.start
            return min(elapsed / self.seconds, 1.0)
        return min(self.step / max(self.total_steps, 1), 1.0)

    def rate(self, progress: float) -> float:
        """Learning rate at ``progress``.

        >>> s = CosineSchedule(1.0, total_steps=100)
        >>> round(s.rate(0.0), 3), round(s.rate(0.03), 3), round(s.rate(1.0), 3)
        (0.0, 1.0, 0.02)
        """
        if progress < self.WARMUP:
            return self.lr * progress / self.WARMUP
        decay = (progress - self.WARMUP) / (1 - self.WARMUP)
        return float(self.lr * (self.floor + (1 - self.floor) * 0.5 * (1 + np.cos(np.pi * decay))))

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(max(self.rate(self.progress()), 1e-7))
        self.step += 1
