"""The checkpoint and resume protocol of a training.

Each epoch a view's network is saved twice under ``TARGET/model``
(:class:`~minc_keras.training.callbacks.BestAndLast`): the best on validation as its model
file, and the last, with its optimizer state, as ``checkpoints/last[_<view>].keras``,
beside a progress record ``checkpoints/state[_<view>].json`` (epochs done, best monitored
value, training seconds, whether the view is complete). The last checkpoint also carries
that record in its info (:data:`CHECKPOINT_KEY`), which wins on resume: a kill between the
two writes leaves the state file an epoch behind. ``model/config.json`` holds the options
the training was started with, which a resumed training takes up again.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from minc_keras.core.errors import UsageError
from minc_keras.core.layout import RunLayout
from minc_keras.models.info import info_layer
from minc_keras.training.network import check_views
from minc_keras.training.options import TrainOptions

#: Key of a last checkpoint's own progress record in its model's info.
CHECKPOINT_KEY = "checkpoint_progress"


def take_progress(model: keras.Model) -> dict:
    """The progress a last checkpoint saved with itself (removed from it), or {}."""
    return info_layer(model).info.pop(CHECKPOINT_KEY, None) or {}


def read_state(path: Path) -> dict | None:
    """A view's progress file, or None when it is missing or unreadable (killed mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_history(layout: RunLayout, view: str, views: list[str]) -> dict:
    """The saved learning curves of one view (empty when there are none)."""
    try:
        return json.loads(layout.history(view, views).read_text())
    except (OSError, ValueError):
        return {}


def saved_config(layout: RunLayout) -> dict:
    """What ``model/config.json`` recorded: the options and model file name of the run.

    :meth:`TrainOptions.from_config` makes the options again, leaving out the keys it
    does not know (the model file name, run-control flags that older versions recorded).

    Raises
    ------
    UsageError
        If there is none to read (nothing to resume).
    """
    try:
        return json.loads(layout.config.read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"nothing to resume in {layout.root}: {layout.config} is missing or unreadable; "
            "start the training without `resume`"
        ) from None


def refuse_unfinished(layout: RunLayout, options: TrainOptions, model_name: str) -> None:
    """Stop a plain rerun from mistaking an interrupted training for a finished one."""
    try:  # the views of the training that wrote the model, whatever this rerun asks
        views = check_views(json.loads(layout.config.read_text())["views"])
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        views = options.views
    paths = layout.model_files(model_name, views)
    for view, path in zip(views, paths, strict=True):
        state = read_state(layout.state(view, views))
        if (state is not None and not state.get("complete")) or not path.exists():
            done = state.get("epochs_done", 0) if state else 0
            raise UsageError(
                f"the training in {layout.model_dir} was interrupted ({view} view, after "
                f"{done} of {options.epochs} epochs); pass `resume` to continue it or "
                "`clobber` to start again"
            )


def forget_checkpoints(layout: RunLayout, views: list[str]) -> None:
    """Remove every view's last checkpoint and progress record (a fresh start)."""
    for view in views:
        layout.checkpoint(view, views).unlink(missing_ok=True)
        layout.state(view, views).unlink(missing_ok=True)


def clean_temporaries(folder: Path) -> None:
    """Remove the temporary files a killed run left behind (see :mod:`minc_keras.core.atomic`)."""
    for stale in folder.rglob(".*.tmp*"):
        stale.unlink(missing_ok=True)
