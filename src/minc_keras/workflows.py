"""The workshop's one-shot pipeline: prepare -> train -> evaluate -> predict -> report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minc_keras.core.atomic import atomic_output
from minc_keras.core.layout import RunLayout
from minc_keras.data.prepare import PrepareSummary, prepare
from minc_keras.evaluation.evaluate import Evaluation, evaluate_test_split, predict_test_scans
from minc_keras.io import Volume, output_suffix, write_volume
from minc_keras.reporting.figures import plot_history, save_montage
from minc_keras.reporting.html import write_html_report
from minc_keras.reporting.summary import calibration_summary, read_json, write_summary
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


def evaluate(target: str | Path, *, model_name: str = "model.keras", predict: str | None = None,
             batch_size: int = 8, quiet: bool = False) -> Evaluation:
    """Evaluate the run's model on its test split and write the run's report.

    Writes ``report/metrics.csv`` (Dice and volumes per test subject and class),
    ``report/summary.json``, the labels and montages of the test subjects ``predict``
    chooses (:func:`predict_test_subjects`), then ``report/report.html``; the command
    ``minc-keras evaluate`` is this call.

    Parameters
    ----------
    target : path-like
        The run folder.
    model_name : str
        File under ``TARGET/model``.
    predict : str, optional
        Test subjects to segment: ``all``, 1-based test positions ``1,4``, or subject
        names; None: none.
    batch_size : int
        Slices per batch for the loss/metric pass.
    quiet : bool
        No progress bar.

    Returns
    -------
    Evaluation
        With ``predictions`` (the files written under ``predict/test``) and ``report``.
    """
    layout = RunLayout(target)
    evaluation = evaluate_test_split(target, model_name=model_name, batch_size=batch_size,
                                     quiet=quiet)
    with atomic_output(layout.metrics_csv, clobber=True) as tmp:
        evaluation.table.to_csv(tmp, index=False)
    info = evaluation.info
    write_summary(layout.root, model=evaluation.network, parameters=evaluation.parameters,
                  test_loss=evaluation.loss, test_accuracy=evaluation.metric,
                  metric_name=evaluation.metric_name, mean_dice=evaluation.mean_dice,
                  inference_seconds=evaluation.seconds_per_volume,
                  calibration=calibration_summary(info.to_dict()) if info else None)
    evaluation.predictions = predict_test_subjects(target, predict, model_name=model_name,
                                                   quiet=quiet)
    evaluation.report = write_html_report(target)
    return evaluation


def predict_test_subjects(target: str | Path, spec: str | None, *,
                          model_name: str = "model.keras", clobber: bool = True,
                          quiet: bool = False) -> list[Path]:
    """Write label volumes (input's format and grid) and montages under ``predict/test``.

    Parameters
    ----------
    target : path-like
        The run folder.
    spec : str or None
        ``all``, 1-based test positions ``1,4``, or subject names; None: none.
    model_name : str
        File under ``TARGET/model``.
    clobber : bool
        Replace files written before.
    quiet : bool
        No progress bar.

    Returns
    -------
    list of Path
        Each subject's label volume and montage.
    """
    out_dir = RunLayout(target).predict_test
    written = []
    for case in predict_test_scans(target, spec, model_name=model_name, quiet=quiet):
        scan = case.scan
        # the stem is the scan's name, made unique when runs share a session
        volume_path = out_dir / f"{scan.stem}_dseg{output_suffix(scan.input)}"
        write_volume(Volume(case.labels, np.asarray(scan.affine)), volume_path, clobber=clobber,
                     history=f"minc-keras prediction of {scan.input} with {case.model_path}")
        montage = save_montage(case.image, case.truth, case.predicted,
                               out_dir / f"{scan.stem}_montage.png",
                               num_classes=case.info.classes,
                               class_names=case.info.class_names, title=scan.stem)
        written += [volume_path, montage]
    return written


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
                              quiet=control.quiet,
                              label_table=options.label_table)
    done("prepare")
    result.trained, result.figures = train_and_report(target, options, control)
    done("train")
    if control.make_model_only:
        return result
    result.evaluation = evaluate(target, model_name=control.model_name, predict=predict,
                                 quiet=control.quiet)
    done("evaluate")
    result.predictions = result.evaluation.predictions
    result.report = result.evaluation.report
    done("predict")
    return result


#: The whole pipeline as one call, by the name the package's top level gives it.
run = run_pipeline
