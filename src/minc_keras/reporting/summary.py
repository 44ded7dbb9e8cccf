"""What one run folder says about itself: the numbers ``report.html`` and ``compare`` show.

``evaluate`` writes ``report/summary.json`` (parameters, test loss and accuracy, mean Dice
per class, training and inference times); :func:`summarise_run` gathers it with
``model/config.json``, ``model/history.json`` and ``report/metrics.csv`` into one
:class:`RunSummary`. Nothing here imports Keras, so ``compare`` starts fast.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from minc_keras.core.atomic import write_text_atomic
from minc_keras.core.layout import RunLayout


@dataclass
class RunSummary:
    """The headline numbers of one run; None where the folder does not record them."""

    folder: Path
    model: str | None = None
    parameters: int | None = None
    epochs: int | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    metric_name: str = "accuracy"
    mean_dice: dict[str, float] = field(default_factory=dict)
    training_minutes: float | None = None
    inference_seconds: float | None = None  #: network time per test volume, reading excluded
    #: the class offsets of ``--calibrate`` and how they were fitted; empty when none
    calibration: dict = field(default_factory=dict)


def read_json(path: Path) -> dict:
    """The JSON object in ``path``, or an empty dict when it is missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    """``value`` as a finite float, else None.

    >>> _number(0.5), _number(float("nan")), _number(None), _number("x")
    (0.5, None, None, None)
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def training_seconds(target: Path) -> float | None:
    """Seconds spent training the run in ``target`` (all views, resumed parts included).

    Read from the progress files that training keeps beside its checkpoints; None when
    there are none (a model trained elsewhere and copied in).
    """
    layout = RunLayout(target)
    config = read_json(layout.config)
    views = config.get("views") or ["axial"]
    # views that share one network (--shared-views) keep one progress file, the first's
    trained = views[:1] if config.get("shared_views") else views
    states = [read_json(layout.state(view, views)) for view in trained]
    seconds = [_number(state.get("seconds")) for state in states]
    if any(s is None for s in seconds):
        return None
    return float(sum(seconds))  # type: ignore[arg-type]


def write_summary(target: Path, *, model: str, parameters: int, test_loss: float,
                  test_accuracy: float, metric_name: str, mean_dice: dict[str, float],
                  inference_seconds: float, calibration: dict | None = None) -> Path:
    """Write ``TARGET/report/summary.json`` after an evaluation (NaN is stored as null).

    Parameters
    ----------
    target : Path
        The run folder.
    model : str
        The network's name (zoo name, or the Keras name of a user's own network).
    parameters : int
        Trainable and other weights of the model (all views).
    test_loss, test_accuracy : float
        Keras' loss and accuracy metric on the test slices.
    metric_name : str
        The accuracy metric's name, e.g. ``categorical_accuracy``.
    mean_dice : dict of str to float
        Mean Dice of each class over the test subjects.
    inference_seconds : float
        Median network time per test volume.
    calibration : dict, optional
        The model's class offsets (``offsets``: class name to offset) and how they were
        fitted (validation ``scans``, ``atrophied_copies`` and their ``atrophy_voxels``,
        ``dice_before``, ``dice_after``); see :func:`calibration_summary`.
    """
    summary = {"model": model, "parameters": int(parameters),
               "test_loss": _number(test_loss), "test_accuracy": _number(test_accuracy),
               "metric_name": metric_name,
               "mean_dice": {str(k): _number(v) for k, v in mean_dice.items()},
               "training_seconds": training_seconds(target),
               "inference_seconds_per_volume": _number(inference_seconds),
               "calibration": calibration or None}
    return write_text_atomic(RunLayout(target).summary, json.dumps(summary, indent=1) + "\n")


def calibration_summary(info: dict) -> dict | None:
    """The class offsets a model's metadata records, by class name; None when it has none.

    >>> info = {"class_names": ["background", "CSF", "GM"], "class_offsets": [0.0, -0.8, 0.1],
    ...         "calibration": {"scans": 2, "dice_before": 0.9, "dice_after": 0.92}}
    >>> calibration_summary(info)["offsets"]
    {'CSF': -0.8, 'GM': 0.1}
    >>> calibration_summary({"class_names": ["background", "CSF"]}) is None
    True
    """
    offsets = info.get("class_offsets")
    if not offsets:
        return None
    fit = info.get("calibration") or {}
    return {"offsets": {str(name): float(value) for name, value
                        in zip(info["class_names"][1:], offsets[1:], strict=True)},
            "scans": fit.get("scans"), "atrophied_copies": fit.get("atrophied_copies", 0),
            "atrophy_voxels": _number(fit.get("atrophy_voxels")),
            "dice_before": _number(fit.get("dice_before")),
            "dice_after": _number(fit.get("dice_after"))}


def _mean_dice(metrics_csv: Path) -> dict[str, float]:
    """Mean Dice per class name, in the file's class order; empty when not evaluated."""
    try:
        metrics = pd.read_csv(metrics_csv)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return {}
    if not {"class_name", "dice"} <= set(metrics.columns):
        return {}
    means = metrics.groupby("class_name", sort=False)["dice"].mean()
    return {str(name): float(value) for name, value in means.items()}


def summarise_run(target: str | Path) -> RunSummary:
    """Gather what ``target`` records about its run; missing pieces stay None.

    Parameters
    ----------
    target : path-like
        A run folder (the ``--target`` of ``run``, or of ``train`` and ``evaluate``).

    Returns
    -------
    RunSummary
    """
    target = Path(target)
    layout = RunLayout(target)
    config = read_json(layout.config)
    summary = read_json(layout.summary)
    history = read_json(layout.history())
    training = _number(summary.get("training_seconds"))
    loss_curve = history.get("loss")
    parameters = summary.get("parameters")
    calibration = summary.get("calibration")
    return RunSummary(
        folder=target,
        model=summary.get("model") or config.get("model_type"),
        parameters=int(parameters) if isinstance(parameters, int) else None,
        epochs=len(loss_curve) if isinstance(loss_curve, list) else None,
        test_loss=_number(summary.get("test_loss")),
        test_accuracy=_number(summary.get("test_accuracy")),
        metric_name=str(summary.get("metric_name") or config.get("metric") or "accuracy"),
        mean_dice=_mean_dice(layout.metrics_csv),
        training_minutes=training / 60 if training is not None else None,
        inference_seconds=_number(summary.get("inference_seconds_per_volume")),
        calibration=calibration if isinstance(calibration, dict) else {},
    )
