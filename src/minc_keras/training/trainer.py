"""``minc-keras train``: fit a network on the prepared cache, keep the best checkpoint.

:func:`train` checks the options, keeps or retrains the model, and trains the network of
each view (or the one they share) in turn; :func:`_fit` fits one network. The options are
:mod:`minc_keras.training.options`, the network :mod:`minc_keras.training.network`, the
checkpoints and resuming :mod:`minc_keras.training.checkpoints` and
:mod:`minc_keras.training.callbacks`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras

from minc_keras.core.atomic import atomic_output, write_text_atomic
from minc_keras.core.errors import UsageError
from minc_keras.core.layout import DEFAULT_MODEL_NAME, RunLayout
from minc_keras.data.augment import SliceAugmenter
from minc_keras.data.cache import SliceCache
from minc_keras.data.dataset import InterleavedViews, SliceDataset, slice_size
from minc_keras.data.patches import PatchDataset
from minc_keras.inference.segmenter import check_classes
from minc_keras.models import get_loss, make_metrics
from minc_keras.models.info import ModelInfo, attach_info, read_info
from minc_keras.models.precision import accelerator
from minc_keras.models.saving import load_trained
from minc_keras.preprocessing.transforms import VOLUME_VIEW
from minc_keras.training.calibration import ATROPHY_VOXELS, Calibration, calibrate_model
from minc_keras.training.callbacks import (
    BestAndLast,
    CosineSchedule,
    EpochOrder,
    NamedProgress,
    TimeBudget,
)
from minc_keras.training.checkpoints import (
    clean_temporaries,
    forget_checkpoints,
    read_history,
    read_state,
    refuse_unfinished,
    saved_config,
    take_progress,
)
from minc_keras.training.compilation import compile_train_step, static_shapes
from minc_keras.training.distribution import data_parallel
from minc_keras.training.network import build_network, check_views, views_for_model
from minc_keras.training.options import RunControl, TrainOptions
from minc_keras.training.recipes import RECIPES
from minc_keras.training.sampling import augmenter, rare_class

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the model went and how training went."""

    model_path: Path
    parameters: int
    history: dict
    seconds: float
    trained: bool
    histories: dict[str, dict] = field(default_factory=dict)
    calibration: Calibration | None = None


def train(target: str | Path, options: TrainOptions | None = None, *, clobber: bool = False,
          resume: bool = False, quiet: bool = False, make_model_only: bool = False,
          model_name: str = DEFAULT_MODEL_NAME) -> TrainResult:
    """Train on ``TARGET/data`` and save ``TARGET/model/<model_name>``.

    With several ``options.views`` one model is trained per view and saved beside the
    first; the first file's metadata lists them all, so prediction averages the views.
    ``model/config.json`` records the options (and the model file name).

    Parameters
    ----------
    target : path-like
        The run folder (prepared by :func:`minc_keras.data.prepare.prepare`).
    options : TrainOptions, optional
        The model and its training (default: the workshop's;
        ``TrainOptions.from_recipe("default")`` for the recommended recipe).
    clobber : bool
        Retrain over an existing model; without it an existing model is kept (not
        retrained), as in the workshop.
    resume : bool
        Continue an interrupted training from each view's last checkpoint (weights,
        optimizer state, epoch count, history, time spent), with the options and model
        file name it was started with (``options`` gives only the ``builder``).
    quiet : bool
        No progress bars.
    make_model_only : bool
        Build and save the untrained model, and stop.
    model_name : str
        The model file name under ``TARGET/model``.

    Returns
    -------
    TrainResult
    """
    control = RunControl(model_name=model_name, make_model_only=make_model_only, resume=resume,
                         clobber=clobber, quiet=quiet)
    layout = RunLayout(target)
    options = TrainOptions() if options is None else options
    if control.resume:
        saved = saved_config(layout)
        options = TrainOptions.from_config(saved, builder=options.builder)
        control = replace(control, make_model_only=False,
                          model_name=saved.get("model_name", control.model_name))
        clean_temporaries(layout.model_dir)
    check_views(options.views)
    options = views_for_model(options)
    cache = SliceCache.open(layout.data)
    paths = layout.model_files(control.model_name, options.views)
    if not control.resume and paths[0].exists() and not control.clobber \
            and not control.make_model_only:
        return _kept(layout, cache, paths, options, control)

    options.check_counts()
    build_network(cache, options, options.views[0])  # refuse bad model options before writing

    if not control.resume:
        if control.clobber:  # a fresh start must not resume the old run's checkpoints
            forget_checkpoints(layout, options.views)
        write_text_atomic(layout.config, json.dumps(
            {**options.config(), "model_name": control.model_name}, indent=1, default=str))
    with data_parallel(options.devices, options.batch_size):
        result = _train_views(layout, cache, paths, options, control)
    if options.calibrate and result.trained:
        result.calibration = calibrate_model(
            paths[0], cache, batch_size=options.batch_size,
            atrophy_voxels=ATROPHY_VOXELS if options.augment_atrophy else 0.0)
    return result


def _kept(layout: RunLayout, cache: SliceCache, paths: list[Path], options: TrainOptions,
          control: RunControl) -> TrainResult:
    """The result of a rerun that keeps the model an earlier, finished training saved."""
    refuse_unfinished(layout, options, control.model_name)
    log.info("%s exists; evaluating it without retraining (pass `clobber` to retrain)",
             paths[0])
    parameters = _kept_parameters([p for p in paths if p.exists()], cache)
    history = read_history(layout, options.views[0], options.views)
    return TrainResult(paths[0], parameters, history, 0.0, trained=False)


def _kept_model(path: Path, cache: SliceCache) -> keras.Model:
    """A trained model kept from an earlier run, checked against the prepared data."""
    model, info = load_trained(path, compile=False)
    check_classes(info, cache, path)
    return model


def _kept_parameters(paths: list[Path], cache: SliceCache) -> int:
    """Parameters of the kept models at ``paths``, a network the views share counted once."""
    total, shared = 0, False
    for path in paths:
        model = _kept_model(path, cache)
        if read_info(model).shared_network:
            if shared:
                continue
            shared = True
        total += model.count_params()
    return total


def _train_views(layout: RunLayout, cache: SliceCache, paths: list[Path],
                 options: TrainOptions, control: RunControl) -> TrainResult:
    """Train (or keep, when resuming) the network of each view, or the one they share."""
    result = TrainResult(paths[0], 0, {}, 0.0, trained=not control.make_model_only)
    spent = 0.0  # training seconds of the networks before this one, earlier runs included
    # what the training labels decide, looked at once for all views
    sampling = {} if control.make_model_only else {
        "augment": augmenter(cache, options, volume=options.views == [VOLUME_VIEW]),
        "repeat_class": rare_class(cache, options)}
    # the views each network learns: all of them, or one apiece
    units = [options.views] if options.shared_views else [[view] for view in options.views]
    for done, views in enumerate(units):
        view, path = views[0], paths[options.views.index(views[0])]
        copies = [(v, paths[options.views.index(v)]) for v in views[1:]]
        last = layout.checkpoint(view, options.views)
        state = read_state(layout.state(view, options.views)) if control.resume else None
        if state is not None and state.get("complete") and path.exists():
            log.info("%s: finished earlier, kept", _named(views))
            result.parameters += _kept_model(path, cache).count_params()
            result.histories[view] = read_history(layout, view, options.views)
            spent += float(state.get("seconds", 0.0))
            _save_for_views(path, copies, cache, clobber=True)  # a kill may have come first
            continue
        keras.utils.set_random_seed(options.seed)
        model, info = build_network(cache, options, view, ensemble=[p.name for p in paths])
        if state is not None and last.exists():
            model = keras.saving.load_model(last)
            state = {**state, **take_progress(model)}  # the checkpoint's own count wins
            log.info("%s: resuming after epoch %d of %d from %s", _named(views),
                     state["epochs_done"], options.epochs, last)
        else:
            state = None
            model.compile(optimizer=keras.optimizers.Adam(options.lr),
                          loss=get_loss(options.loss),
                          metrics=make_metrics(info.num_outputs, options.metric))
        result.parameters += model.count_params()
        if control.make_model_only:
            with atomic_output(path, clobber=control.clobber) as tmp:
                model.save(tmp)
            _save_for_views(path, copies, cache, clobber=control.clobber)
            continue
        budget = None
        if options.time_budget:  # what is left, shared by the networks still to train
            budget = max((options.time_budget * 60 - spent) / (len(units) - done), 1.0)
        history, seconds = _fit(model, info, cache, options, views, path, layout, budget,
                                quiet=control.quiet, resumed=state, **sampling)
        _save_for_views(path, copies, cache, clobber=True)
        result.histories[view] = history
        result.seconds += seconds
        spent += seconds
    result.history = result.histories.get(options.views[0], {})
    return result


def _named(views: list[str]) -> str:
    """How the log names a network by its views.

    >>> _named(["axial"]), _named(["axial", "coronal"])
    ('axial view', 'shared network of the axial, coronal views')
    """
    if len(views) == 1:
        return f"{views[0]} view"
    return f"shared network of the {', '.join(views)} views"


def _save_for_views(path: Path, copies: list[tuple[str, Path]], cache: SliceCache, *,
                    clobber: bool) -> None:
    """Save the network at ``path`` once more for each ``(view, path)`` of ``copies``.

    Each copy carries its own view's metadata (the slice size it pads to), so prediction
    runs the shared network along every view, as it would separate ones.
    """
    if not copies:
        return
    model, info = load_trained(path, compile=False)
    network = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for view, copy in copies:
        # prediction takes the class offsets from the first file
        mine = dataclasses.replace(info, view=view, class_offsets=None,
                                   slice_size=list(slice_size(cache, view, info.multiple)))
        with atomic_output(copy, clobber=clobber) as tmp:
            attach_info(network, mine).save(tmp)


def _datasets(cache: SliceCache, options: TrainOptions, info: ModelInfo, views: list[str], *,
              augment: SliceAugmenter | None, repeat_class: int | None) -> tuple[list, object]:
    """The training parts (one per view) and the validation data of one network.

    A network of volumes trains on random cubes and validates on whole scans; a network
    of slices on every training slice of each view, several views' batches interleaved.
    """
    common = {"batch_size": options.batch_size, "num_outputs": info.num_outputs,
              "multiple": info.multiple}
    if views == [VOLUME_VIEW]:
        train_data = PatchDataset(cache, "train", seed=options.seed, augment=augment,
                                  rare_class=repeat_class, **common)
        return [train_data], PatchDataset(cache, "validate", patch_size=None, **common)
    train_parts, validate_parts = [], []
    for view in views:
        # every training step sees a full batch (the slices left over change each
        # epoch); with several devices validation batches must split evenly too
        part = SliceDataset(cache, "train", view=view, shuffle=True, seed=options.seed,
                            augment=augment, drop_remainder=True, repeat_class=repeat_class,
                            **common)
        if len(part) == 0 and options.devices == 1:  # fewer slices than one batch
            part.drop_remainder = False
        train_parts.append(part)
        validate_parts.append(SliceDataset(cache, "validate", view=view,
                                           drop_remainder=options.devices > 1, **common))
    if len(views) > 1:
        return train_parts, InterleavedViews(validate_parts)
    return train_parts, validate_parts[0]


def _compile_steps(model: keras.Model, train_parts: list, views: list[str],
                   budget: float | None, *, recipe: str | None = None) -> float:
    """Compile the training step of each view's slice size; return the seconds it took.

    Compiling a large share of a short budget is worth a warning; advice to turn it off
    only when it was the user's choice, never when the ``recipe`` turned it on (the
    recipe's choice was measured, first runs included).
    """
    if views == [VOLUME_VIEW]:
        # measured: its step broke into many graphs and hit Dynamo's recompile limit
        log.info("volume view: trains eagerly (`jit_compile` is for slice views: the 3-D "
                 "network's step does not compile into one graph)")
        return 0.0
    compiling, compiled = 0.0, True
    for part in train_parts:  # one graph per view's slice size, compiled up front
        seconds, compiled = compile_train_step(model, part)
        compiling += seconds
    if compiled:
        log.info("%s: training step compiled in %.0f s", _named(views), compiling)
    if budget is not None and compiling > budget / 4:
        from_recipe = recipe is not None and RECIPES[recipe].values.get("jit_compile", False)
        log.warning("%s: compiling took %.0f s of its %.0f s%s", _named(views), compiling,
                    budget, " (a first run compiles from scratch; later ones reuse what "
                    "torch cached)" if from_recipe else "; with budgets this short, train "
                    "without `jit_compile`")
    return compiling


def _fit(model: keras.Model, info: ModelInfo, cache: SliceCache, options: TrainOptions,
         views: list[str], path: Path, layout: RunLayout, budget: float | None = None, *,
         quiet: bool = False, resumed: dict | None = None,
         augment: SliceAugmenter | None = None,
         repeat_class: int | None = None) -> tuple[dict, float]:
    """Fit one network on ``views``, saving the best and the last checkpoint; return its history.

    ``budget`` (seconds) stops the fit when spent; the cosine schedule then runs on time.
    ``resumed`` (a progress record of :class:`BestAndLast`) continues an interrupted fit:
    epochs, best value and seconds already spent carry on. The seconds returned include
    those of the interrupted run. ``augment`` and ``repeat_class`` are the training slices'
    augmentation and oversampled class (:mod:`minc_keras.training.sampling`). Several
    ``views`` (``shared_views``) train the network on all their slices, interleaved; the
    checkpoints and history are then the first view's.
    """
    view = views[0]
    train_parts, validate_data = _datasets(cache, options, info, views, augment=augment,
                                           repeat_class=repeat_class)
    train_data = train_parts[0] if len(train_parts) == 1 else \
        InterleavedViews(train_parts, shuffle=True, seed=options.seed)
    if len(train_data) == 0:
        raise UsageError(f"the training split in {layout.data} holds no slices to learn from"
                         if train_data.num_slices == 0 else
                         f"the training split in {layout.data} holds fewer slices "
                         f"({train_data.num_slices}) than one batch; lower `batch_size`")
    unit = ("cubes per epoch", "scans") if view == VOLUME_VIEW else ("slices", "slices")
    log.info("training %s, %s (%d parameters) on %d %s, validating on %d %s, on %s",
             options.model_type, _named(views), model.count_params(), train_data.num_slices,
             unit[0], validate_data.num_slices, unit[1], accelerator() or "the CPU")
    history = {}
    if resumed:  # the curves up to the checkpoint (a kill may have come between the two)
        history = {key: values[:resumed["epochs_done"]]
                   for key, values in read_history(layout, view, options.views).items()}
    saver = BestAndLast(path, layout.checkpoint(view, options.views),
                        layout.state(view, options.views), layout.history(view, options.views),
                        "val_loss" if len(validate_data) else "loss",
                        resumed=resumed, history=history)
    first_epoch = saver.epochs_done
    to_train = first_epoch < options.epochs and (budget is None or saver.seconds_before < budget)
    compiling = 0.0
    if to_train and options.jit_compile:
        compiling = _compile_steps(model, train_parts, views, budget, recipe=options.recipe)
        saver.seconds_before += compiling  # spent, as training time is
    callbacks: list[keras.callbacks.Callback] = [EpochOrder(train_data), saver]
    named = options.class_names is not None or options.label_table is not None
    if named and not quiet:  # the user's names in the printed log
        callbacks.append(NamedProgress(info.class_names))
    if budget is not None:
        left = budget - saver.seconds_before
        log.info("%s: training for at most %.1f min", _named(views), left / 60)
        # leave room for the last validation and checkpoint after the deadline
        callbacks.insert(0, TimeBudget(time.perf_counter() + left - budget * 0.03))
    if options.schedule == "cosine":  # over the training time, compiling left out
        callbacks.insert(0, CosineSchedule(options.lr,
                                           seconds=None if budget is None
                                           else max(budget - compiling, 1.0),
                                           total_steps=options.epochs * len(train_data),
                                           seconds_done=saver.seconds_before - compiling,
                                           steps_done=first_epoch * len(train_data)))
    if to_train:  # even when compiling used up the budget: one batch, one checkpoint
        with static_shapes():  # the views' slice sizes each keep their own graph
            model.fit(train_data, validation_data=validate_data if len(validate_data) else None,
                      epochs=options.epochs, initial_epoch=first_epoch, callbacks=callbacks,
                      shuffle=False,  # the dataset shuffles, by seed and epoch (resumable)
                      verbose=_keras_verbosity(quiet))
    saver.write_state(complete=True)
    return saver.history, saver.seconds


def _keras_verbosity(quiet: bool) -> int:
    """0 when quiet, a live bar on a terminal, one line per epoch otherwise (logs, CI)."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2
