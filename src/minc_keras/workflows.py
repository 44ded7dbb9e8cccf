"""The workshop's one-shot pipeline: prepare -> train -> evaluate -> predict -> report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from minc_keras.data.prepare import PrepareSummary, prepare
from minc_keras.evaluation.evaluate import Evaluation, evaluate, predict_test_subjects
from minc_keras.reporting.figures import plot_history
from minc_keras.reporting.html import write_html_report
from minc_keras.reporting.summary import read_json
from minc_keras.training.trainer import TrainOptions, TrainResult, train

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


def train_and_report(target: str | Path, options: TrainOptions) -> tuple[TrainResult, list[Path]]:
    """Train, then draw the learning curves into ``TARGET/report``."""
    result = train(target, options)
    class_names = read_json(Path(target) / "model" / "config.json").get("class_names")
    figures = []
    for view, history in result.histories.items():
        suffix = "" if view == options.views[0] else f"_{view}"
        if history:
            figures.append(plot_history(history,
                                        Path(target) / "report" / f"learning_curves{suffix}.png",
                                        class_names=class_names))
    if result.trained:  # a shared network has one curve: drop the views' curves of a run before
        for view in options.views[1:]:
            if view not in result.histories:
                (Path(target) / "report" / f"learning_curves_{view}.png").unlink(missing_ok=True)
    return result, figures


def run_pipeline(source: str | Path, target: str | Path, *, input_str: str, label_str: str,
                 ratios: tuple[float, float], seed: int, options: TrainOptions,
                 predict: str | None = None,
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
    options : TrainOptions
        Model and training options (``make_model_only`` stops after building).
    predict : str, optional
        ``--predict``: ``all``, 1-based test positions ``1,4``, or subject names.
    on_step : callable, optional
        Called as ``on_step(step, result)`` after each of "prepare", "train", "evaluate"
        and "predict", so a caller can report progress as it happens.
    """
    result = RunResult()

    def done(step: str) -> None:
        if on_step is not None:
            on_step(step, result)

    result.prepared = prepare(source, target, input_str=input_str, label_str=label_str,
                              ratios=ratios, seed=seed, clobber=options.clobber,
                              quiet=options.quiet)
    done("prepare")
    result.trained, result.figures = train_and_report(target, options)
    done("train")
    if options.make_model_only:
        return result
    result.evaluation = evaluate(target, model_name=options.model_name, quiet=options.quiet)
    done("evaluate")
    result.predictions = predict_test_subjects(target, predict, model_name=options.model_name,
                                               quiet=options.quiet)
    result.report = write_html_report(target)
    done("predict")
    return result
