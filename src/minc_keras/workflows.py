"""The workshop's one-shot pipeline: prepare -> train -> evaluate -> predict -> report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minc_keras.core.layout import RunLayout
from minc_keras.data.prepare import PrepareSummary, prepare
from minc_keras.evaluation.evaluate import Evaluation, evaluate, predict_test_subjects
from minc_keras.reporting.figures import plot_history
from minc_keras.reporting.html import write_html_report
from minc_keras.reporting.summary import read_json
from minc_keras.training.options import RunControl, TrainOptions
from minc_keras.training.trainer import TrainResult, train

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Everything one run produced."""

    prepared: PrepareSummary | None = None
    trained: TrainResult | None = None
    evaluation: Evaluation | None = None
    predictions: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    report: Path | None = None


def train_and_report(target: str | Path, options: TrainOptions | None = None,
                     control: RunControl | None = None) -> tuple[TrainResult, list[Path]]:
    """Train (:func:`~minc_keras.training.trainer.train`), then draw the learning curves.

    Parameters
    ----------
    target : path-like
        The prepared run folder; the figures go to ``TARGET/report``.
    options : TrainOptions, optional
        The model and its training (default: the workshop's).
    control : RunControl, optional
        How this call runs (clobber, resume, quiet, model file name).
    """
    options = TrainOptions() if options is None else options
    control = RunControl() if control is None else control
    result = train(target, options, **asdict(control))
    layout = RunLayout(target)
    class_names = read_json(layout.config).get("class_names")
    figures = []
    for view, history in result.histories.items():
        if history:
            figures.append(plot_history(history, layout.learning_curves(view, options.views),
                                        class_names=class_names))
    if result.trained:  # a shared network has one curve: drop the views' curves of a run before
        for view in options.views[1:]:
            if view not in result.histories:
                layout.learning_curves(view, options.views).unlink(missing_ok=True)
    return result, figures


def run_pipeline(source: str | Path, target: str | Path, *, input_str: str, label_str: str,
                 ratios: tuple[float, float], seed: int, options: TrainOptions | None = None,
                 control: RunControl | None = None, predict: str | None = None,
                 on_step: Callable[[str, RunResult], None] | None = None) -> RunResult:
    """Run every step of the workshop's command on one source folder.

    Parameters
    ----------
    source, target : path-like
        Where the scans are; where data/, model/, report/ and predict/ go.
    input_str, label_str : str
        Substring or glob naming inputs and labels.
    ratios : (float, float)
        Training and validation fractions of subjects.
    seed : int
        Split seed.
    options : TrainOptions, optional
        Model and training options (default: the workshop's).
    control : RunControl, optional
        How the run goes: ``clobber``, ``quiet``, ``model_name``, ``make_model_only``
        (stops after building the model) and ``resume`` (of the training).
    predict : str, optional
        ``--predict``: ``all``, 1-based test positions ``1,4``, or subject names.
    on_step : callable, optional
        Called as ``on_step(step, result)`` after each of "prepare", "train", "evaluate"
        and "predict", so a caller can report progress as it happens.
    """
    options = TrainOptions() if options is None else options
    control = RunControl() if control is None else control
    result = RunResult()

    def done(step: str) -> None:
        if on_step is not None:
            on_step(step, result)

    result.prepared = prepare(source, target, input_str=input_str, label_str=label_str,
                              ratios=ratios, seed=seed, clobber=control.clobber,
                              quiet=control.quiet)
    done("prepare")
    result.trained, result.figures = train_and_report(target, options, control)
    done("train")
    if control.make_model_only:
        return result
    result.evaluation = evaluate(target, model_name=control.model_name, quiet=control.quiet)
    done("evaluate")
    result.predictions = predict_test_subjects(target, predict, model_name=control.model_name,
                                               quiet=control.quiet)
    result.report = write_html_report(target)
    done("predict")
    return result
