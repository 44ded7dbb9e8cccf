"""Compiled training steps: ``torch.compile`` through Keras' ``jit_compile``.

On a CPU a compiled step takes less time than an eager one, after a minute or more of
compiling per model, most of it spent tracing Keras' Python code (so PyTorch's on-disk
cache of compiled kernels saves little): ``benchmarks/README.md``, "Compiled vs eager
steps". :func:`compile_train_step` pays that cost up
front, on one batch, so that training with a time budget can count it and schedule the
learning rate over the time left. Validation and prediction stay eager: they are a small
share of the work, and their last, smaller batch would compile once more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import keras

log = logging.getLogger(__name__)

#: Why compiling failed in this process (then it is not tried again), or None.
_failure: str | None = None


def keep_compile_cache() -> str | None:
    """Point PyTorch's compile cache at the user's cache folder, unless one was chosen.

    Its default lives under the system's temporary folder, which many systems empty at
    every boot, so each first run after one compiled from scratch. The user cache
    (``$XDG_CACHE_HOME`` or ``~/.cache``, ``minc-keras/torchinductor``) survives; a
    ``TORCHINDUCTOR_CACHE_DIR`` already set wins. Returns the folder, or None when none
    could be made (the default then applies).
    """
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return os.environ["TORCHINDUCTOR_CACHE_DIR"]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "minc-keras" / "torchinductor"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return str(folder)


def compile_train_step(model: keras.Model, dataset: keras.utils.PyDataset
                       ) -> tuple[float, bool]:
    """Compile ``model``'s training step on the first batch of ``dataset``.

    The step is run once through :meth:`keras.Model.fit`, so that the compiled graph is
    the one later fits use, then the weights and the optimizer state (moments, step
    count) are put back as they were: the compiling batch teaches the model nothing.
    The weights are given zero gradients first: the step's graph depends on whether
    gradients exist yet, and every step after the first finds them, so the first must too
    or the first real step compiles a second graph. Shapes are compiled static: Keras
    compiles every model's step from the same code, so PyTorch would otherwise compile a
    second model of other slice sizes (the next view) for symbolic sizes, which failed in
    inductor for the U-Net.

    Compiling needs the PyTorch backend and, on a CPU, a C++ compiler. Where it fails the
    model is left to train eagerly, as it was, and the reason is logged once.

    Parameters
    ----------
    model : keras.Model
        A compiled model (its optimizer and loss set).
    dataset : keras.utils.PyDataset
        The training batches; only the first is read.

    Returns
    -------
    seconds : float
        Time spent, compiled or not.
    compiled : bool
        Whether the model's training step is now the compiled one.
    """
    start = time.perf_counter()
    if _failure is None and keras.backend.backend() != "torch":
        _give_up(f"it needs the PyTorch backend, not {keras.backend.backend()}")
    if _failure is not None:
        return time.perf_counter() - start, False
    import torch

    keep_compile_cache()
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    for variable in model.trainable_variables:
        variable.value.grad = torch.zeros_like(variable.value)
    weights = model.get_weights()
    state = [variable.numpy() for variable in optimizer.variables]
    model.jit_compile = True
    try:  # static shapes: the step of a second model (another view) would go symbolic
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
            model.make_train_function(force=True)
            model.fit(dataset, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    except Exception as error:  # a missing compiler surfaces as any of several errors
        _give_up(_reason(error))
    finally:
        model.set_weights(weights)
        for variable, value in zip(optimizer.variables, state, strict=True):
            variable.assign(value)
        model.reset_metrics()
        model.jit_compile = False  # validation and checkpoints stay eager
        model.make_test_function(force=True)
        if _failure is not None:
            model.make_train_function(force=True)
    return time.perf_counter() - start, _failure is None


@contextlib.contextmanager
def static_shapes() -> Iterator[None]:
    """Inside this block a compiled step meeting a new input shape compiles it static.

    A network shared by several views (``--shared-views``) sees each view's slice size:
    each gets its own graph, compiled up front by :func:`compile_train_step`, instead of
    PyTorch recompiling the step for symbolic sizes (which failed in inductor for the
    U-Net). Nothing changes on other backends or for eager steps.
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        yield


def _reason(error: Exception) -> str:
    r"""The line of ``error`` that says what went wrong, without Keras' wrapping.

    >>> _reason(RuntimeError("Exception encountered when calling Functional.call().\n\n"
    ...                      "\x1b[1mTypeError: cannot determine truth value\x1b[0m"))
    'TypeError: cannot determine truth value'
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    return (lines or [type(error).__name__])[0][:200]


def _give_up(reason: str) -> None:
    """Remember why compiling does not work here and say so, once."""
    global _failure
    _failure = reason
    log.warning("`jit_compile`: torch.compile does not work here (%s); training without it",
                reason)
