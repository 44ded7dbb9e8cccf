"""The ``minc-keras`` command line: parse, run one command, map errors to exit codes.

Exit codes: 0 success, 2 bad input or usage (one sentence naming the file and the fix),
1 unexpected failure (a bug: rerun with ``--verbose`` for the traceback). Only a
:class:`~minc_keras.core.errors.MincKerasError` is the user's to fix (exit 2); anything
else is a bug (exit 1).

Only this layer knows about flags. A library error names a parameter in backquotes
(``"`batch_size` 0 is below 1"``), which reads right from Python; printed here, each
backquoted name that a flag of the parser sets becomes that flag (``--batch-size 0 is
below 1``), by the destination-to-flag map of :func:`minc_keras.cli.parser.flag_names`
(:func:`~minc_keras.cli.messages.user_message`); log lines too, by the formatter of
the log handler set up here. A backquoted word that no flag sets is printed as it is.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Mapping, Sequence

from minc_keras.cli.commands import COMMANDS
from minc_keras.cli.compute import set_up_compute
from minc_keras.cli.messages import FlagNames, user_message
from minc_keras.cli.parser import build_parser, flag_names, parse_args
from minc_keras.core.errors import MincKerasError

log = logging.getLogger("minc_keras")

#: What to install for a missing package the user chose to need (a backend or an extra).
_INSTALL = {
    "torch": "PyTorch, the default Keras backend: pip install torch (a CPU-only build is "
             "enough without a GPU; the README says how)",
    "jax": 'JAX, the backend KERAS_BACKEND=jax names: pip install "jax[cpu]"',
    "tensorflow": "TensorFlow, the backend KERAS_BACKEND=tensorflow names: pip install tensorflow",
    "nilearn": 'nilearn, for the demo data: pip install "minc-keras[demo]"',
    "dask": 'Dask, for --scheduler dask: pip install "minc-keras[dask]"',
    "distributed": 'Dask, for --scheduler dask: pip install "minc-keras[dask]"',
}


def missing_package(name: str) -> str:
    """One sentence naming what to install for the missing package ``name``.

    >>> missing_package("torch").split(";")[0]
    'torch is not installed'
    """
    return f"{name.split('.')[0]} is not installed; install {_INSTALL[name.split('.')[0]]}"


def _configure_logging(verbose: int, quiet: bool, flags: Mapping[str, str]) -> None:
    """Log to stderr at the level of ``verbose``, each line with flags (:class:`FlagNames`)."""
    level = {0: logging.WARNING, 1: logging.INFO, 2: logging.INFO}.get(verbose, logging.DEBUG)
    if quiet:
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(FlagNames(flags))
    for noisy in ("h5py", "matplotlib", "PIL", "nibabel", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # nibabel logs a header problem as an error, then raises it; the exception becomes our
    # one-sentence error, so the log line (printed twice, by nibabel's handler and ours) goes
    logging.getLogger("nibabel.global").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parse_args(sys.argv[1:] if argv is None else argv, parser)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command not in COMMANDS:
        parser.error(f"`{args.command}` is not available yet in this version")
    verbose = getattr(args, "verbose", 1)
    flags = flag_names(parser)
    _configure_logging(verbose, getattr(args, "quiet", False), flags)
    try:
        set_up_compute(args)  # before the command imports Keras: the backend reads it once
        return COMMANDS[args.command](args)
    except MincKerasError as exc:
        print(f"minc-keras: error: {user_message(str(exc), flags)}",
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in _INSTALL:
            raise
        print(f"minc-keras: error: {missing_package(exc.name)}", file=sys.stderr)
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
