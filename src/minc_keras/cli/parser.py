"""Argument parsing of ``minc-keras``: every sub-command, its flags, and the options they make.

The model and training flags of ``run`` and ``train`` are generated from the fields of
:class:`~minc_keras.training.options.TrainOptions` and
:class:`~minc_keras.training.options.RunControl` (their ``metadata`` holds flag and help),
with no default: the flags a user gave are collected and the options made by
:meth:`TrainOptions.from_recipe <minc_keras.training.options.TrainOptions.from_recipe>`, so
a recipe fills in exactly the flags not given. :func:`flag_names` maps each parameter name
to its flag, for the messages of :mod:`minc_keras.cli.main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from minc_keras import __version__
from minc_keras.core.compute import DEVICES
from minc_keras.training.options import GROUPS, RunControl, TrainOptions, comma_names
from minc_keras.training.recipes import RECIPES

#: The hidden flag a bare ``--save-probabilities`` before a scan becomes.
ALL_PROBABILITIES = "--save-all-probabilities"
#: Endings of scan files (a word ending so after ``--save-probabilities`` is a scan).
SCAN_SUFFIXES = (".mnc", ".nii", ".nii.gz", ".h5", ".txt")

#: The sub-commands whose flags include the model and training options.
TRAINING_COMMANDS = ("run", "train")


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ``ValueError`` becomes the usage error it prints.

    >>> from minc_keras.training.options import comma_ints
    >>> _argparse_type(comma_ints)("1,2"), _argparse_type(int) is int
    ([1, 2], True)
    """
    if parse in (int, float, str):  # argparse words their errors itself
        return parse

    def converted(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    converted.__name__ = parse.__name__
    return converted


def _add_field(group: argparse._ArgumentGroup, spec: dataclasses.Field) -> None:
    """Add the flag of one option field, from its ``metadata``, with no default."""
    meta = spec.metadata
    flags = meta.get("flags", (meta["flag"],))
    kwargs: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS,
                              "help": meta.get("help")}
    if "action" in meta:
        kwargs["action"] = meta["action"]
    elif spec.type in (bool, "bool"):
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _argparse_type(meta.get("type", str))
    for key in ("choices", "metavar"):
        if key in meta:
            kwargs[key] = meta[key]
    group.add_argument(*flags, **kwargs)
    if "shortcut" in meta:
        flag, const, text = meta["shortcut"]
        group.add_argument(flag, dest=spec.name, action="store_const", const=const,
                           default=argparse.SUPPRESS, help=text)


def _recipe_help() -> str:
    """The ``--recipe`` help, made of the recipes' summaries."""
    names = [f"{recipe.name} ({recipe.summary})" for recipe in RECIPES.values()]
    return ("defaults for every model and training flag not given: "
            f"{', '.join(names[:-1])} or {names[-1]}")


def _option_fields() -> list[dataclasses.Field]:
    """The fields of the training options that have a flag, in the order of their help."""
    fields = [f for f in (*dataclasses.fields(TrainOptions), *dataclasses.fields(RunControl))
              if f.metadata.get("flag")]
    return sorted(fields, key=lambda f: list(GROUPS).index(f.metadata["group"]))


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Add the model and training flags, generated from the option dataclasses."""
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    groups["schedule"].add_argument("--recipe", choices=list(RECIPES), default=None,
                                    help=_recipe_help())
    for spec in _option_fields():
        _add_field(groups[spec.metadata["group"]], spec)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", type=int, nargs="?", const=2, default=1,
                        metavar="LEVEL",
                        help="0 silent, 1 basic (default), 2 detailed with tracebacks, 3 debug")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, fewer messages")


def add_compute_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` and ``--device``, which :mod:`minc_keras.cli.compute` applies."""
    group = parser.add_argument_group("compute")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads per process: torch's and the OpenMP and BLAS pools, in "
                       "this process and the processes it starts (predict's, each local Dask "
                       "worker's); default: the backend's, usually one per core")
    group.add_argument("--device", choices=DEVICES, default=None,
                       help="cpu: compute on the CPU even where a GPU is (every GPU hidden); "
                       "cuda: on a CUDA GPU, refused where none is found; default: a GPU where "
                       "the backend finds one")


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


def _add_predict(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser("predict", help="segment new scans in their own grid and format")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="scans: files, folders (searched recursively), globs, or "
                         "@list.txt (one scan per line, relative to the list's folder; blank "
                         "lines and # comments ignored)")
    predict.add_argument("--model", required=True, help="TARGET/model/model.keras of a run")
    predict.add_argument("-o", "--output", default="predictions",
                         help="folder for the labels, sidecars and volumes.csv "
                         "(default ./predictions)")
    predict.add_argument("--save-probabilities", dest="save_probabilities", nargs="?",
                         const=True, default=False, type=comma_names, metavar="NAME,...",
                         help="also write the probability maps of these classes, e.g. "
                         "'Left Hippocampus,Right Hippocampus' (bare: every class)")
    # a bare --save-probabilities before a scan (normalise_argv)
    predict.add_argument(ALL_PROBABILITIES, dest="save_probabilities", action="store_const",
                         const=True, help=argparse.SUPPRESS)
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
    predict.add_argument("--scheduler-file", dest="scheduler_file", default=None,
                         metavar="PATH",
                         help="the scheduler file of a running Dask cluster, as dask-jobqueue "
                         "or dask-mpi --scheduler-file write it")
    predict.add_argument("--qc", action="store_true",
                         help="also draw each scan's QC picture (three planes, label contours) "
                         "and OUTPUT/qc.html, one page of every scan, QC outliers first")
    predict.add_argument("--bids", action="store_true",
                         help="write BIDS derivatives: OUTPUT/sub-X/[ses-Y/]anat/"
                         "sub-X[_ses-Y]_desc-<model>_dseg.<ext>, dataset_description.json and "
                         "dseg.tsv (every input must be BIDS-named, sub-X[_ses-Y]_..._T1w)")
    add_compute_options(predict)
    _add_common(predict)


def _add_tools(sub: argparse._SubParsersAction) -> None:
    """The sub-commands beside the pipeline: models, compare, convert, demo, demo-data."""
    models = sub.add_parser("models", help="list the model zoo with parameter counts")
    models.add_argument("--num-classes", dest="num_classes", type=int, default=3)
    _add_common(models)

    compare = sub.add_parser("compare", help="compare runs: parameters, accuracy, Dice, times")
    compare.add_argument("targets", nargs="+", metavar="TARGET",
                         help="run folders (the --target of evaluated runs)")
    compare.add_argument("-o", "--output", default=None, metavar="DIR",
                         help="also write the table as DIR/compare.csv and draw it as "
                         "DIR/compare.png (default: print the table only)")
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
    demo.add_argument("--clobber", action="store_true",
                      help="redo everything from scratch (without it, a target that holds an "
                      "earlier demo's outputs is refused)")
    add_compute_options(demo)
    _add_common(demo)

    demo_data = sub.add_parser("demo-data", help="write a small demo dataset (MINC2)")
    demo_data.add_argument("dest", help="folder to create")
    demo_data.add_argument("--subjects", type=int, default=8, help="pseudo-subjects (default 8)")
    demo_data.add_argument("--seed", type=int, default=0)
    demo_data.add_argument("--clobber", action="store_true", help="write into an existing folder")
    _add_common(demo_data)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="minc-keras",
        description="Deep learning for brain MRI segmentation (MINC and NIfTI). "
        "With no sub-command, the options are those of `run`.",
    )
    parser.add_argument("--version", action="version", version=f"minc-keras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="prepare -> train -> evaluate -> predict (the default)")
    _add_data_options(run, required=True)
    add_training_options(run)
    run.add_argument("--predict", default=None,
                     help="test subjects to segment: `all`, positions like 1,4, or names")
    add_compute_options(run)
    _add_common(run)

    prepare = sub.add_parser("prepare", help="discover scans, split subjects, fill the cache")
    _add_data_options(prepare, required=True)
    prepare.add_argument("--label-table", default=None, metavar="FILE.tsv",
                         help="a tab-separated table naming the label codes (columns index and "
                         "name): refused if it lacks a code found in the labels")
    _add_common(prepare)

    train = sub.add_parser("train", help="train on TARGET's prepared data")
    train.add_argument("--target", required=True, help="folder prepared by `prepare`")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--clobber", action="store_true", help="retrain over an existing model")
    add_training_options(train)
    add_compute_options(train)
    _add_common(train)

    evaluate = sub.add_parser("evaluate", help="test-split metrics of TARGET's model")
    evaluate.add_argument("--target", required=True, help="folder with data/ and model/")
    evaluate.add_argument("--model", dest="model_name", default="model.keras")
    evaluate.add_argument("--predict", default=None,
                          help="test subjects to segment: `all`, positions like 1,4, or names")
    add_compute_options(evaluate)
    _add_common(evaluate)

    _add_predict(sub)
    _add_tools(sub)
    return parser


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Treat the workshop's bare-flag form (``minc-keras --source ...``) as ``run``.

    >>> normalise_argv(["--source", "s"]), normalise_argv(["--help"])
    (['run', '--source', 's'], ['--help'])
    """
    argv = list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        return ["run", *argv]
    return [ALL_PROBABILITIES if arg == "--save-probabilities" and _is_scan(following) else arg
            for arg, following in zip(argv, [*argv[1:], ""], strict=True)]


def _is_scan(text: str) -> bool:
    """Whether a word after a bare ``--save-probabilities`` is a scan (or list, or folder),
    not class names: ``predict --save-probabilities scan.mnc`` means every class's map.

    >>> _is_scan("sub-01_T1w.nii.gz"), _is_scan("@scans.txt"), _is_scan("GM,WM")
    (True, True, False)
    """
    return bool(text) and (text.startswith("@") or text.endswith(SCAN_SUFFIXES)
                           or os.path.exists(text))


def parse_args(argv: Sequence[str], parser: argparse.ArgumentParser | None = None
               ) -> argparse.Namespace:
    """Parse a command line (the bare-flag form taken as ``run``)."""
    return (parser or build_parser()).parse_args(normalise_argv(argv))


def run_control(args: argparse.Namespace) -> RunControl:
    """How the ``run`` or ``train`` command runs, from its flags."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunControl)
             if hasattr(args, f.name)}
    return RunControl(**{**given, "quiet": args.quiet or args.verbose == 0})


def train_options(args: argparse.Namespace) -> TrainOptions:
    """The training options of ``run`` or ``train``: the recipe's, the flags given winning.

    >>> options = train_options(parse_args(["train", "--target", "t", "--recipe", "fast",
    ...                                     "--epochs", "3"]))
    >>> options.model_type, options.epochs, options.recipe
    ('unet', 3, 'fast')
    """
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainOptions)
             if f.init and hasattr(args, f.name)}
    return TrainOptions.from_recipe(args.recipe, **given)


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each parameter name (argparse destination) and the flag that sets it.

    >>> names = flag_names(build_parser())
    >>> names["batch_size"], names["model_name"], names["n_dil"], names["precision"]
    ('--batch-size', '--model', '--n-dil', '--precision')
    """
    names = {f.name: f.metadata["flag"] for f in _option_fields()}
    parsers = [parser]
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            long = [flag for flag in action.option_strings if flag.startswith("--")]
            if long and action.dest not in names:
                names[action.dest] = long[0]
    return names
