"""The ``minc-keras`` command line: parse, call one library function, map errors to exit codes.

Exit codes: 0 success, 2 bad input or usage (one sentence naming the file and the fix),
1 unexpected failure (a bug: rerun with ``--verbose`` for the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from minc_keras import __version__
from minc_keras.core.errors import MincKerasError
from minc_keras.training.recipes import RECIPES, recipe_defaults

log = logging.getLogger("minc_keras")

SUBCOMMANDS = ("run", "prepare", "train", "evaluate", "predict", "models", "convert",
               "compare", "demo-data", "demo")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", type=int, nargs="?", const=2, default=1,
                        metavar="LEVEL",
                        help="0 silent, 1 basic (default), 2 detailed with tracebacks, 3 debug")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, fewer messages")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and training (the workshop's flags)")
    group.add_argument("--model-type", dest="model_type", default="model_0_0",
                       help="network: model_0_0 .. model_4_0, custom, dil, unet "
                       "(default model_0_0)")
    group.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    group.add_argument("--batch-size", dest="batch_size", type=int, default=1,
                       help="slices per batch (default 1, the workshop's)")
    group.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    group.add_argument("--loss", default="categorical_crossentropy",
                       help="categorical_crossentropy, binary_crossentropy, dice, dice_ce, "
                            "dice_wce (Dice + class-balanced cross-entropy)")
    group.add_argument("--metric", default="categorical_accuracy", help="accuracy metric")
    group.add_argument("--activation-hidden", dest="activation_hidden", default="relu")
    group.add_argument("--activation-output", dest="activation_output", default="softmax")
    group.add_argument("--nK", type=_int_list, default=None,
                       help="kernels per layer for custom/dil, e.g. 16,32,64,128")
    group.add_argument("--n_dil", "--n-dil", dest="n_dil", type=_int_list, default=None,
                       help="dilation rate per layer for custom, e.g. 1,2,4")
    group.add_argument("--kernel-size", dest="kernel_size", type=int, default=None,
                       help="kernel size for custom (default 3)")
    group.add_argument("--drop-out", dest="drop_out", type=float, default=None,
                       help="dropout rate for custom (default 0)")
    group.add_argument("--input-stride", dest="input_stride", type=int, default=1,
                       help="unet: fold each NxN block of pixels into channels so the network "
                       "runs at 1/N resolution and predicts every pixel of the block (2 trains "
                       "faster on a CPU; default 1)")
    group.add_argument("--refine-filters", dest="refine_filters", type=int, default=0,
                       help="unet: filters of a head at full resolution that corrects the "
                       "class scores from them and the input slice, for sharper boundaries "
                       "after --input-stride (default 0: none)")
    group.add_argument("--pad", type=int, default=0,
                       help="pad slices to a multiple of 2^PAD (the U-Net needs at least 3)")
    group.add_argument("--views", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                       default=["axial"],
                       help="train one model per view, e.g. axial,coronal,sagittal; prediction "
                       "averages them (default axial; a 3-D --model-type unet3d takes whole "
                       "volumes: volume)")
    group.add_argument("--class-names", dest="class_names",
                       type=lambda t: [n.strip() for n in t.split(",")], default=None,
                       help="a name per label value in ascending order, e.g. "
                       "background,CSF,GM,WM (default label_1, label_2, ...)")
    group.add_argument("--model", dest="model_name", default="model.keras",
                       help="model file name under TARGET/model (default model.keras)")
    group.add_argument("--make-model-only", dest="make_model_only", action="store_true",
                       help="build and save the untrained model, print its size, stop")
    group = parser.add_argument_group("recipes and training schedule")
    group.add_argument("--recipe", choices=list(RECIPES), default=None,
                       help="defaults for every model and training flag not given: workshop "
                       "(the workshop's, also the defaults with no recipe), default (accurate "
                       "3-view U-Net in about 20 min on a CPU, recommended) or fast (one view, "
                       "about 5 min)")
    group.add_argument("--time-budget", dest="time_budget", type=float, default=None,
                       metavar="MINUTES",
                       help="stop training when this many minutes are spent (all views "
                       "together), keeping the best checkpoint")
    group.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                       help="learning rate: constant, or warm-up then cosine decay over the "
                       "epochs or the time budget (default constant)")
    group.add_argument("--precision", choices=("float32", "bfloat16", "float16", "mixed"),
                       default="float32",
                       help="float32 (default); bfloat16 or float16 compute with 16-bit "
                       "activations and float32 weights (bfloat16: CPUs with AVX-512 BF16 or "
                       "AMX; float16: GPUs); mixed picks float16 on a GPU, bfloat16 on a CPU "
                       "that has it, float32 otherwise")
    group.add_argument("--mixed-precision", dest="precision", action="store_const",
                       const="mixed", help="the same as --precision mixed")
    group.add_argument("--jit-compile", dest="jit_compile",
                       action=argparse.BooleanOptionalAction, default=False,
                       help="compile each slice view's training step with torch.compile "
                       "before it trains (PyTorch backend, a C++ compiler on a CPU): faster "
                       "steps after 0.5-1.5 minutes of compiling per view, which count "
                       "against --time-budget; eager with a warning where compiling fails "
                       "(default off; on in --recipe default)")
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                       help="random flips, rotations, scaling, gamma, bias field and noise on "
                       "the training slices (default off)")
    group.add_argument("--augment-atrophy", dest="augment_atrophy",
                       action=argparse.BooleanOptionalAction, default=False,
                       help="also enlarge the darkest tissue class (the ventricles of a T1 "
                       "scan) by 1-6 voxels in 30 %% of the training slices, pushing the "
                       "tissue around it aside, as in older brains (default off)")
    group.add_argument("--oversample-rare", dest="oversample_rare",
                       action=argparse.BooleanOptionalAction, default=False,
                       help="show the training slices that hold the rarest tissue class (the "
                       "ventricles of tissue labels) twice per epoch (default off)")
    group.add_argument("--shared-views", dest="shared_views",
                       action=argparse.BooleanOptionalAction, default=False,
                       help="train one network on the slices of every view (their batches "
                       "interleaved) for the whole time budget, instead of one network per "
                       "view for its share; prediction still runs it along every view "
                       "(default off)")
    group.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=False,
                       help="once trained, fit a probability offset per class that maximises "
                       "Dice on the validation scans and store it in the model, for every "
                       "prediction (corrects the over-segmentation of small classes that "
                       "class-weighted losses give; default off)")
    group.add_argument("--devices", type=int, default=1,
                       help="train data-parallel over this many devices, e.g. GPUs (JAX "
                       "backend: KERAS_BACKEND=jax; default 1)")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted training from its last checkpoint, with "
                       "the settings it was started with (other model flags are ignored)")


def _add_data_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("data (the workshop's flags)")
    group.add_argument("--source", required=required, help="folder searched for scans and labels")
    group.add_argument("--target", required=required,
                       help="folder for data/, model/, report/, predict/")
    group.add_argument("--input-str", dest="input_str", default="pet",
                       help="substring or glob naming the input scans, e.g. '*T1w_anat*' "
                       "(default: pet, the workshop's)")
    group.add_argument("--label-str", dest="label_str", default="brainmask",
                       help="substring or glob naming the label volumes, e.g. '*seg*' "
                       "(default: brainmask, the workshop's)")
    group.add_argument("--ratios", nargs=2, type=float, default=(0.7, 0.15),
                       metavar=("TRAIN", "VALIDATE"),
                       help="fractions of subjects for training and validation; test gets the rest")
    group.add_argument("--seed", type=int, default=0, help="seed of the split and training")
    group.add_argument("--clobber", action="store_true", help="replace existing outputs")


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    """Return the parser for every sub-command.

    Parameters
    ----------
    recipe : str, optional
        Recipe whose values become the defaults of the model and training flags of
        ``run`` and ``train`` (flags given on the command line still win).
    """
    parser = argparse.ArgumentParser(
        prog="minc-keras",
        description="Deep learning for brain MRI segmentation (MINC and NIfTI). "
        "With no sub-command, the options are those of `run`.",
    )
    parser.add_argument("--version", action="version", version=f"minc-keras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="prepare -> train -> evaluate -> predict (the default)")
    _add_data_options(run, required=True)
    _add_model_options(run)
    run.add_argument("--predict", default=None,
                     help="test subjects to segment: `all`, positions like 1,4, or names")
    _add_common(run)
    run.set_defaults(**recipe_defaults(recipe))

    prepare = sub.add_parser("prepare", help="discover scans, split subjects, fill the cache")
    _add_data_options(prepare, required=True)
    _add_common(prepare)

    train = sub.add_parser("train", help="train on TARGET's prepared data")
    train.add_argument("--target", required=True, help="folder prepared by `prepare`")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--clobber", action="store_true", help="retrain over an existing model")
    _add_model_options(train)
    _add_common(train)
    train.set_defaults(**recipe_defaults(recipe))

    evaluate = sub.add_parser("evaluate", help="test-split metrics of TARGET's model")
    evaluate.add_argument("--target", required=True, help="folder with data/ and model/")
    evaluate.add_argument("--model", dest="model_name", default="model.keras")
    evaluate.add_argument("--predict", default=None,
                          help="test subjects to segment: `all`, positions like 1,4, or names")
    _add_common(evaluate)

    predict = sub.add_parser("predict", help="segment new scans in their own grid and format")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="scans: files, folders (searched recursively) or globs")
    predict.add_argument("--model", required=True, help="TARGET/model/model.keras of a run")
    predict.add_argument("-o", "--output", default="predictions",
                         help="folder for the labels, sidecars and volumes.csv "
                         "(default ./predictions)")
    predict.add_argument("--save-probabilities", dest="save_probabilities",
                         action="store_true", help="also write a probability map per class")
    predict.add_argument("--batch-size", dest="batch_size", type=int, default=8,
                         help="slices per forward pass (default 8)")
    predict.add_argument("--tta", action="store_true",
                         help="also segment the left-right mirrored scan and average")
    predict.add_argument("--clobber", action="store_true", help="replace existing outputs")
    predict.add_argument("--skip-existing", dest="skip_existing", action="store_true",
                         help="leave out scans whose labels exist in the output folder (resume "
                         "an interrupted run; on by default with --scheduler dask)")
    predict.add_argument("--scheduler", choices=("serial", "dask"), default="serial",
                         help="serial (default), or dask: scans in parallel on a "
                         "dask.distributed cluster, local unless --scheduler-address is given")
    predict.add_argument("--workers", type=int, default=2,
                         help="worker processes of the local Dask cluster (default 2)")
    predict.add_argument("--scheduler-address", dest="scheduler_address", default=None,
                         metavar="ADDRESS",
                         help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (a cluster "
                         "started by dask-jobqueue on SLURM, say)")
    _add_common(predict)

    models = sub.add_parser("models", help="list the model zoo with parameter counts")
    models.add_argument("--num-classes", dest="num_classes", type=int, default=3)
    _add_common(models)

    compare = sub.add_parser("compare", help="compare runs: parameters, accuracy, Dice, times")
    compare.add_argument("targets", nargs="+", metavar="TARGET",
                         help="run folders (the --target of evaluated runs)")
    compare.add_argument("-o", "--output", default=".",
                         help="folder for compare.csv and compare.png (default: the current "
                         "folder)")
    _add_common(compare)

    convert = sub.add_parser("convert", help="MINC1/MINC2/NIfTI -> MINC2/NIfTI, same geometry")
    convert.add_argument("input", help="volume to read (.mnc, .mnc.gz, .nii, .nii.gz)")
    convert.add_argument("output", help="volume to write; .mnc writes MINC2, .nii[.gz] NIfTI")
    convert.add_argument("--clobber", action="store_true", help="replace OUTPUT if it exists")
    _add_common(convert)

    demo = sub.add_parser("demo", help="demo-data + run: the whole pipeline in a few minutes")
    demo.add_argument("--target", default="minc-keras-demo",
                      help="folder for the demo data and the run (default minc-keras-demo)")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--clobber", action="store_true", help="redo everything from scratch")
    _add_common(demo)

    demo_data = sub.add_parser("demo-data", help="write a small demo dataset (MINC2)")
    demo_data.add_argument("dest", help="folder to create")
    demo_data.add_argument("--subjects", type=int, default=8, help="pseudo-subjects (default 8)")
    demo_data.add_argument("--seed", type=int, default=0)
    demo_data.add_argument("--clobber", action="store_true", help="write into an existing folder")
    _add_common(demo_data)
    return parser


def _cmd_prepare(args: argparse.Namespace) -> int:
    from minc_keras.data.prepare import prepare

    summary = prepare(args.source, args.target, input_str=args.input_str,
                      label_str=args.label_str, ratios=tuple(args.ratios), seed=args.seed,
                      clobber=args.clobber, quiet=args.quiet)
    for line in summary.lines():
        print(line)
    return 0


def _train_options(args: argparse.Namespace):
    from minc_keras.core.errors import UsageError
    from minc_keras.models import check_input_stride, check_refine_filters, get_loss
    from minc_keras.training.trainer import TrainOptions

    if args.resume and args.clobber:
        raise UsageError("--resume continues a training and --clobber starts it again; "
                         "give one of them")
    # unknown names and options are refused now, before any scan is read
    get_loss(args.loss)
    check_input_stride(args.model_type, args.input_stride)
    check_refine_filters(args.model_type, args.refine_filters)
    return TrainOptions(
        model_type=args.model_type, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        loss=args.loss, metric=args.metric, activation_hidden=args.activation_hidden,
        activation_output=args.activation_output, nK=args.nK, kernel_size=args.kernel_size,
        drop_out=args.drop_out, n_dil=args.n_dil, input_stride=args.input_stride,
        refine_filters=args.refine_filters, pad=args.pad, model_name=args.model_name,
        seed=args.seed, clobber=args.clobber, make_model_only=args.make_model_only,
        class_names=args.class_names, views=args.views,
        quiet=args.quiet or args.verbose == 0, time_budget=args.time_budget,
        schedule=args.schedule, augment=args.augment, augment_atrophy=args.augment_atrophy,
        oversample_rare=args.oversample_rare, shared_views=args.shared_views,
        calibrate=args.calibrate,
        precision=args.precision,
        recipe=args.recipe, resume=args.resume, devices=args.devices,
        jit_compile=args.jit_compile,
    )


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


def _cmd_run(args: argparse.Namespace) -> int:
    from minc_keras.workflows import run_pipeline

    def report(step: str, result) -> None:
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

    run_pipeline(args.source, args.target, input_str=args.input_str, label_str=args.label_str,
                 ratios=tuple(args.ratios), seed=args.seed, options=_train_options(args),
                 predict=args.predict, on_step=report)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from minc_keras.workflows import train_and_report

    trained, figures = train_and_report(args.target, _train_options(args))
    _print_training(trained)
    for path in figures:
        print(f"wrote {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from minc_keras.evaluation.evaluate import evaluate, predict_test_subjects
    from minc_keras.reporting.html import write_html_report

    _print_evaluation(evaluate(args.target, model_name=args.model_name, quiet=args.quiet))
    for path in predict_test_subjects(args.target, args.predict, model_name=args.model_name,
                                      quiet=args.quiet):
        print(f"wrote {path}")
    print(f"report: {write_html_report(args.target)}")
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
                           scheduler_address=args.scheduler_address)
    if Path(args.output).is_dir():
        print(f"segmented {_scans(len(report.rows))} into {args.output}")
    else:  # nothing segmented, and the folders made for the run were removed
        print(f"segmented {_scans(0)}; {args.output} was not made")
    if report.skipped:
        print(f"left out {_scans(len(report.skipped))} whose labels exist already "
              "(--clobber redoes them)")
    if report.table_path is not None:
        print(f"wrote {report.table_path}")
    if report.failures:
        if len(report.rows) + len(report.failures) > 1:  # one alone was reported as it failed
            print(f"{_scans(len(report.failures))} failed:", file=sys.stderr)
            for path, reason in report.failures:
                print(f"  {path}: {reason}", file=sys.stderr)
        return 2
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from minc_keras.models import describe_models

    for row in describe_models(args.num_classes):
        print(f"{row['name']:<10} {row['parameters']:>10,}  {row['layers']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from minc_keras.reporting.compare import compare_runs, format_table

    table, csv_path, png_path = compare_runs(args.targets, args.output)
    print(format_table(table))
    print(f"wrote {csv_path}")
    print(f"wrote {png_path}")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from minc_keras.data.demo import make_demo_dataset

    source = Path(args.target) / "source"
    if args.clobber or not source.exists():
        make_demo_dataset(source, clobber=args.clobber)
        print(f"demo data written to {source}")
    argv = ["run", "--source", str(source), "--target", args.target, "--epochs",
            str(args.epochs), "--model-type", "model_0_0", "--input-str", "*T1w_anat*",
            "--label-str", "*seg*", "--predict", "all", "--ratios", "0.7", "0.15",
            "--batch-size", "8", "--lr", "1e-3", "--activation-hidden", "relu",
            "--activation-output", "softmax", "--class-names", "background,GM,WM",
            "-v", str(args.verbose)]
    if args.clobber:
        argv.append("--clobber")
    if args.quiet:
        argv.append("--quiet")
    print("minc-keras " + " ".join(argv))
    return _cmd_run(build_parser().parse_args(argv))


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


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """Treat the workshop's bare-flag form (``minc-keras --source ...``) as ``run``."""
    argv = list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        return ["run", *argv]
    return argv


def _recipe_named(argv: Sequence[str]) -> str | None:
    """The ``--recipe`` value in ``argv`` if it names a known recipe (the parser rejects others).

    >>> _recipe_named(["run", "--recipe", "fast"]), _recipe_named(["run", "--recipe=x"])
    ('fast', None)
    """
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--recipe")
    known, _ = finder.parse_known_args(list(argv))
    return known.recipe if known.recipe in RECIPES else None


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = {0: logging.WARNING, 1: logging.INFO, 2: logging.INFO}.get(verbose, logging.DEBUG)
    if quiet:
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("h5py", "matplotlib", "PIL", "nibabel", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # nibabel logs a header problem as an error, then raises it; the exception becomes our
    # one-sentence error, so the log line (printed twice, by nibabel's handler and ours) goes
    logging.getLogger("nibabel.global").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    argv = _normalise_argv(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_recipe_named(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command not in COMMANDS:
        parser.error(f"`{args.command}` is not available yet in this version")
    verbose = getattr(args, "verbose", 1)
    _configure_logging(verbose, getattr(args, "quiet", False))
    try:
        return COMMANDS[args.command](args)
    except MincKerasError as exc:
        print(f"minc-keras: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `minc-keras models | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("minc-keras: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose >= 2:
            traceback.print_exc()
        print(f"minc-keras: unexpected error: {type(exc).__name__}: {exc} "
              "(this is a bug; rerun with -v 2 and report the traceback)", file=sys.stderr)
        return 1
