"""One function per ``minc-keras`` sub-command: call the library, print what it made.

Each command imports the library it calls when it runs, not when this module loads, so
that ``minc-keras --help``, ``convert`` or ``compare`` start without importing Keras.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from minc_keras.cli.messages import user_message
from minc_keras.cli.parser import build_parser, flag_names, run_control, train_options
from minc_keras.core.errors import OutputExistsError
from minc_keras.core.layout import RunLayout
from minc_keras.training.options import RunControl, TrainOptions


def _cmd_prepare(args: argparse.Namespace) -> int:
    from minc_keras.data.prepare import prepare

    summary = prepare(args.source, args.target, input_str=args.input_str,
                      label_str=args.label_str, ratios=tuple(args.ratios), seed=args.seed,
                      clobber=args.clobber, quiet=args.quiet, label_table=args.label_table)
    for line in summary.lines():
        print(line)
    return 0


def checked_options(args: argparse.Namespace) -> tuple[TrainOptions, RunControl]:
    """The training options and run control of ``run`` or ``train``, checked up front.

    Unknown names and impossible options are refused now, before any scan is read.
    """
    from minc_keras.models import check_input_stride, check_refine_filters, get_loss

    control = run_control(args)
    options = train_options(args)
    get_loss(options.loss)
    check_input_stride(options.model_type, options.input_stride)
    check_refine_filters(options.model_type, options.refine_filters)
    return options, control


def _print_training(trained) -> None:
    print(f"model: {trained.model_path} ({trained.parameters:,} parameters)")
    if trained.trained:
        print(f"trained in {trained.seconds / 60:.1f} min")
    if trained.calibration is not None:
        print(trained.calibration.line())


def _print_evaluation(evaluation) -> None:
    if evaluation.table.empty:
        print("Test: no test subjects (the ratios give every subject to training and "
              "validation); use minc-keras predict on new scans")
        return
    print(f"Test: Loss= {evaluation.loss:.4f} Metric= {evaluation.metric:.4f} "
          f"({evaluation.metric_name}; parameters = {evaluation.parameters:,})")
    for name, dice in evaluation.mean_dice.items():
        print(f"  mean Dice {name}: {dice:.3f}")


def _report_step(step: str, result) -> None:
    """Print what one step of ``run`` made, as soon as it is done."""
    if step == "prepare":
        for line in result.prepared.lines():
            print(line)
    elif step == "train":
        _print_training(result.trained)
        for path in result.figures:
            print(f"wrote {path}")
    elif step == "evaluate":
        _print_evaluation(result.evaluation)
    else:
        for path in result.predictions:
            print(f"wrote {path}")
        print(f"report: {result.report}")
    sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from minc_keras.workflows import run_pipeline

    options, control = checked_options(args)
    run_pipeline(args.source, args.target, input_str=args.input_str, label_str=args.label_str,
                 ratios=tuple(args.ratios), seed=args.seed, options=options, control=control,
                 predict=args.predict, on_step=_report_step)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from minc_keras.workflows import train_and_report

    trained, figures = train_and_report(args.target, *checked_options(args))
    _print_training(trained)
    for path in figures:
        print(f"wrote {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from minc_keras.workflows import evaluate

    evaluation = evaluate(args.target, model_name=args.model_name, predict=args.predict,
                          quiet=args.quiet)
    _print_evaluation(evaluation)
    for path in evaluation.predictions:
        print(f"wrote {path}")
    print(f"report: {evaluation.report}")
    return 0


def _scans(count: int) -> str:
    """``"1 scan"``, ``"2 scans"``."""
    return f"{count} scan{'s' * (count != 1)}"


def _cmd_predict(args: argparse.Namespace) -> int:
    from minc_keras.predict.runner import predict_scans

    report = predict_scans(args.model, args.inputs, args.output, clobber=args.clobber,
                           save_probabilities=args.save_probabilities,
                           batch_size=args.batch_size, tta=args.tta, quiet=args.quiet,
                           skip_existing=args.skip_existing or args.scheduler == "dask",
                           scheduler=args.scheduler, workers=args.workers,
                           scheduler_address=args.scheduler_address,
                           scheduler_file=args.scheduler_file, qc=args.qc, bids=args.bids)
    if Path(args.output).is_dir():
        print(f"segmented {_scans(len(report.rows))} into {args.output}")
    else:  # nothing segmented, and the folders made for the run were removed
        print(f"segmented {_scans(0)}; {args.output} was not made")
    if report.skipped:
        print(f"left out {_scans(len(report.skipped))} whose labels exist already "
              "(--clobber redoes them)")
    if report.not_scans:  # each was named as it was skipped
        count = len(report.not_scans)
        print(f"left out {count} file{'s' * (count != 1)} found beside the scans that "
              f"{'are' if count != 1 else 'is a'} label map{'s' * (count != 1)} or "
              f"mask{'s' * (count != 1)}, not {'scans' if count != 1 else 'a scan'}")
    if report.table_path is not None:
        print(f"wrote {report.table_path}")
    if report.qc_page is not None:
        print(f"wrote {report.qc_page}")
    if report.failures:
        if len(report.rows) + len(report.failures) > 1:  # one alone was reported as it failed
            print(f"{_scans(len(report.failures))} failed:", file=sys.stderr)
            flags = flag_names(build_parser())
            for path, reason in report.failures:
                print(f"  {path}: {user_message(reason, flags)}", file=sys.stderr)
        return 2
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from minc_keras.models import describe_models

    for row in describe_models(args.num_classes):
        print(f"{row['name']:<10} {row['parameters']:>10,}  {row['layers']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from minc_keras.reporting.compare import comparison_table, format_table, write_comparison

    table = comparison_table(args.targets)
    print(format_table(table))
    if args.output is not None:  # files only where asked: nothing lands in the current folder
        for path in write_comparison(table, args.output):
            print(f"wrote {path}")
    elif not args.quiet:  # on stderr: stdout stays the table alone, for a pipe
        print("(-o DIR also writes the table as DIR/compare.csv and draws DIR/compare.png)",
              file=sys.stderr)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from minc_keras.io import convert_volume

    out = convert_volume(args.input, args.output, clobber=args.clobber)
    print(f"wrote {out}")
    return 0


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from minc_keras.data.demo import make_demo_dataset

    paths = make_demo_dataset(args.dest, n_subjects=args.subjects, seed=args.seed,
                              clobber=args.clobber)
    print(f"wrote {len(paths)} files under {args.dest}")
    return 0


#: The demo's data and model: the demo scans, a small workshop network for a few minutes.
DEMO_DATA = {"input_str": "*T1w_anat*", "label_str": "*seg*", "ratios": (0.7, 0.15),
             "predict": "all"}
DEMO_MODEL = {"model_type": "model_0_0", "batch_size": 8, "lr": 1e-3,
              "activation_hidden": "relu", "activation_output": "softmax",
              "class_names": ["background", "GM", "WM"]}


def demo_command(source: Path, target: str, epochs: int, *, verbose: int, clobber: bool,
                 quiet: bool) -> str:
    """The ``minc-keras run`` command line the demo runs, to show (globs quoted).

    >>> demo_command(Path("d/source"), "d", 5, verbose=1, clobber=False, quiet=False)[:60]
    'minc-keras run --source d/source --target d --epochs 5 --mod'
    >>> "--input-str '*T1w_anat*'" in demo_command(Path("s"), "d", 5, verbose=1,
    ...                                            clobber=False, quiet=False)
    True
    """
    argv = ["run", "--source", str(source), "--target", target, "--epochs", str(epochs),
            "--model-type", DEMO_MODEL["model_type"], "--input-str", DEMO_DATA["input_str"],
            "--label-str", DEMO_DATA["label_str"], "--predict", DEMO_DATA["predict"],
            "--ratios", *map(str, DEMO_DATA["ratios"]),
            "--batch-size", str(DEMO_MODEL["batch_size"]), "--lr", "1e-3",
            "--activation-hidden", DEMO_MODEL["activation_hidden"],
            "--activation-output", DEMO_MODEL["activation_output"],
            "--class-names", ",".join(DEMO_MODEL["class_names"]), "-v", str(verbose)]
    argv += ["--clobber"] * clobber + ["--quiet"] * quiet
    return "minc-keras " + shlex.join(argv)


def refuse_earlier_demo(target: str) -> None:
    """Refuse a ``target`` that holds an earlier demo's model or predictions.

    Without ``--clobber`` nothing is overwritten: a second demo into the same folder
    would rewrite the first one's evaluation, report and ``predict/test`` outputs.
    """
    layout = RunLayout(target)
    earlier = [folder for folder in (layout.model_dir, layout.predict_test)
               if folder.is_dir() and any(folder.iterdir())]
    if earlier:
        raise OutputExistsError(
            f"{target} holds an earlier demo's outputs ({' and '.join(map(str, earlier))}); "
            "give `clobber` to redo the demo there, or another `target`")


def _cmd_demo(args: argparse.Namespace) -> int:
    from minc_keras.data.demo import make_demo_dataset
    from minc_keras.workflows import run_pipeline

    if not args.clobber:
        refuse_earlier_demo(args.target)
    source = Path(args.target) / "source"
    if args.clobber or not source.exists():
        make_demo_dataset(source, clobber=args.clobber)
        print(f"demo data written to {source}")
    print(demo_command(source, args.target, args.epochs, verbose=args.verbose,
                       clobber=args.clobber, quiet=args.quiet))
    options = TrainOptions(epochs=args.epochs, **DEMO_MODEL)
    control = RunControl(clobber=args.clobber, quiet=args.quiet or args.verbose == 0)
    run_pipeline(source, args.target, seed=0, options=options, control=control,
                 on_step=_report_step, **DEMO_DATA)
    return 0


#: The function of each sub-command.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo,
    "run": _cmd_run,
    "prepare": _cmd_prepare,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "models": _cmd_models,
    "convert": _cmd_convert,
    "compare": _cmd_compare,
    "demo-data": _cmd_demo_data,
}
