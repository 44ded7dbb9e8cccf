"""``minc-keras train``: fit a network on the prepared cache, keep the best checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from minc_keras import __version__
from minc_keras.core.atomic import atomic_output, write_text_atomic
from minc_keras.core.errors import UsageError
from minc_keras.data.augment import SliceAugmenter, VolumeAugmenter, darkest_class
from minc_keras.data.cache import CROP_MARGIN, SliceCache
from minc_keras.data.dataset import InterleavedViews, SliceDataset, slice_size
from minc_keras.data.patches import PATCH_SIZE, PatchDataset
from minc_keras.inference.segmenter import check_classes
from minc_keras.models import (
    SpatialMultiple,
    build_model,
    get_loss,
    make_metrics,
    required_multiple,
    spatial_dims,
)
from minc_keras.models.info import attach_info, info_layer, read_info
from minc_keras.models.precision import accelerator, dtype_policy
from minc_keras.models.saving import load_trained
from minc_keras.preprocessing.transforms import VIEW_AXES, VOLUME_VIEW
from minc_keras.training.calibration import ATROPHY_VOXELS, Calibration, calibrate_model
from minc_keras.training.compilation import compile_train_step, static_shapes

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Model and training options; the defaults are the workshop's.

    ``time_budget`` (minutes, all views together) stops training when it is spent, even
    before ``epochs``; ``schedule`` is ``"constant"`` or ``"cosine"`` (a short warm-up,
    then cosine decay of the learning rate over the epochs or the time budget);
    ``augment`` perturbs the training slices (:class:`~minc_keras.data.augment.SliceAugmenter`);
    ``augment_atrophy`` also enlarges the darkest tissue class (the ventricles of a T1
    scan) in some of them, as in older brains (:func:`~minc_keras.data.augment.expand_class`);
    ``oversample_rare`` shows the training slices that hold the rarest foreground class
    (the ventricles) twice per epoch; ``precision="bfloat16"`` computes in bfloat16 with
    float32 weights (faster on CPUs with AVX-512 BF16 or AMX; the saved model predicts in
    float32 on a CPU without them); ``"float16"`` likewise in float16 with loss scaling
    (GPUs); ``"mixed"`` picks float16 on a GPU, bfloat16 on a CPU with native bfloat16,
    float32 otherwise. ``resume``
    continues an interrupted training from its last checkpoint, with the settings it was
    started with (``model/config.json``). ``devices`` > 1 trains data-parallel over
    that many devices (Keras' distribution API, JAX backend): every batch is split
    evenly across them and the gradients are averaged. ``calibrate`` fits a probability
    offset per class on the validation scans once training ends and stores it in the
    model (:mod:`minc_keras.training.calibration`; with ``augment_atrophy``, on atrophied copies of
    them too). ``jit_compile`` compiles each slice view's training step before it trains
    (:mod:`minc_keras.training.compilation`; the 3-D network's ``volume`` view trains eagerly); the
    compiling counts against ``time_budget``, and the cosine schedule runs over the time
    left. ``shared_views`` trains one network on the slices of all ``views`` (their
    batches interleaved) for the whole budget, instead of one network per view for its
    share; each view's model file then holds that network.
    """

    model_type: str = "model_0_0"
    epochs: int = 10
    batch_size: int = 1
    lr: float = 1e-4
    loss: str = "categorical_crossentropy"
    metric: str = "categorical_accuracy"
    activation_hidden: str = "relu"
    activation_output: str = "softmax"
    nK: list[int] | None = None
    kernel_size: int | None = None
    drop_out: float | None = None
    n_dil: list[int] | None = None
    input_stride: int = 1
    refine_filters: int = 0
    pad: int = 0
    views: list[str] = field(default_factory=lambda: ["axial"])
    class_names: list[str] | None = None
    model_name: str = "model.keras"
    seed: int = 0
    clobber: bool = False
    make_model_only: bool = False
    quiet: bool = False
    time_budget: float | None = None
    schedule: str = "constant"
    augment: bool = False
    augment_atrophy: bool = False
    oversample_rare: bool = False
    shared_views: bool = False
    calibrate: bool = False
    precision: str = "float32"
    recipe: str | None = None
    resume: bool = False
    devices: int = 1
    jit_compile: bool = False
    builder: Callable | None = field(default=None, repr=False)


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


def check_views(views: list[str]) -> list[str]:
    """Validate ``--views``: known names, no repeats; ``volume`` stands alone."""
    unknown = [v for v in views if v not in (*VIEW_AXES, VOLUME_VIEW)]
    if unknown or not views or len(set(views)) != len(views) or \
            (VOLUME_VIEW in views and len(views) > 1):
        raise UsageError(
            f"--views {','.join(views)} is not valid; give distinct views among "
            f"{', '.join(VIEW_AXES)}, e.g. --views axial,coronal,sagittal (or --views "
            f"{VOLUME_VIEW} alone, for --model-type unet3d)"
        )
    return list(views)


def views_for_model(options: TrainOptions) -> TrainOptions:
    """``options`` with the views its network takes: ``volume`` for a network of volumes.

    A 3-D network given the default ``--views axial`` gets ``volume``; one given other
    slicing views (a recipe's three, say), or a 2-D network given ``volume``, is refused in
    one sentence.
    """
    volume = options.builder is None and spatial_dims(options.model_type) == 3
    if volume and options.views in (["axial"], [VOLUME_VIEW]):
        return replace(options, views=[VOLUME_VIEW])
    if volume:
        raise UsageError(
            f"--model-type {options.model_type} segments whole volumes, not slices of the "
            f"{','.join(options.views)} view{'s' * (len(options.views) > 1)}; give --views "
            f"{VOLUME_VIEW} (the views may come from a --recipe)")
    if VOLUME_VIEW in options.views:
        raise UsageError(
            f"--views {VOLUME_VIEW} needs a network of volumes (--model-type unet3d), not "
            f"{options.model_type}")
    return options


def num_outputs(num_classes: int, options: TrainOptions) -> int:
    """Output channels: one sigmoid channel for a binary target, else one per class."""
    if options.activation_output != "sigmoid":
        return num_classes
    if num_classes != 2:
        raise UsageError(
            f"--activation-output sigmoid needs a binary label (background and one class), but "
            f"the labels have {num_classes} classes; use --activation-output softmax"
        )
    return 1


def model_path(target: Path, options: TrainOptions) -> Path:
    """``TARGET/model/<name>.keras`` (a workshop ``.hdf5`` name becomes ``.keras``)."""
    name = Path(options.model_name).name
    if not name.endswith(".keras"):
        name = Path(name).stem + ".keras"
    return target / "model" / name


def build_network(cache: SliceCache, options: TrainOptions, view: str = "axial", *,
                  ensemble: list[str] | None = None) -> tuple[keras.Model, dict]:
    """The network for one view of this cache, with its prediction metadata attached."""
    wanted = dtype_policy(options.precision)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(wanted)
    try:
        return _build_network(cache, options, view, ensemble)
    finally:
        keras.config.set_dtype_policy(policy)


def _build_network(cache: SliceCache, options: TrainOptions, view: str,
                   ensemble: list[str] | None) -> tuple[keras.Model, dict]:
    outputs = num_outputs(cache.num_classes, options)
    volume = view == VOLUME_VIEW
    if options.builder is not None:
        core = options.builder((None, None, 1), outputs)
        multiple = max(2 ** options.pad, 1)
    else:
        core = build_model(options.model_type, num_classes=outputs,
                           activation_hidden=options.activation_hidden,
                           activation_output=options.activation_output, nK=options.nK,
                           kernel_size=options.kernel_size, drop_out=options.drop_out,
                           n_dil=options.n_dil,
                           input_shape=(None, None, None, 1) if volume else None,
                           input_stride=options.input_stride,
                           refine_filters=options.refine_filters)
        multiple = max(2 ** options.pad, required_multiple(options.model_type))
    # a U-Net deeper than the default needs larger multiples: pad to what it checks for
    multiple = max([multiple] + [layer.multiple for layer in core.layers
                                 if isinstance(layer, SpatialMultiple)])
    names = [f"label_{v}" if v else "background" for v in cache.class_values]
    if options.class_names is not None:
        if len(options.class_names) != cache.num_classes:
            raise UsageError(
                f"--class-names gives {len(options.class_names)} names but the labels have "
                f"{cache.num_classes} classes (values {cache.class_values}); give one name per "
                "value, background first"
            )
        names = list(options.class_names)
    voxel = np.median([np.sqrt((np.asarray(s.affine)[:3, :3] ** 2).sum(0)) for s in cache.scans],
                      axis=0)
    info = {
        "format": "minc-keras/1", "minc_keras_version": __version__,
        "keras_backend": keras.backend.backend(),
        "model_type": options.model_type if options.builder is None else "custom-builder",
        "class_values": cache.class_values,
        "class_names": names,
        "num_outputs": outputs, "view": view, "multiple": multiple,
        # a half-resolution network is run once more per slice, a pixel shifted, and the
        # two averaged: +0.003 ventricle Dice on the default recipe's folds 1-3
        "shift_passes": options.input_stride if options.builder is None else 1,
        # a network of volumes sees whole scans, padded to its multiple, at prediction
        **({"patch_size": PATCH_SIZE} if volume else
           {"slice_size": list(slice_size(cache, view, multiple))}),
        "normalisation": {"method": "percentile", "low": 0.5, "high": 99.5, "clip": 1.5},
        "crop_margin": CROP_MARGIN, "voxel_sizes_mm": [float(v) for v in voxel],
        "source": cache.manifest.get("config", {}),
        "ensemble": list(ensemble or []),
        # one network in every view's file: its parameters count once
        **({"shared_network": True} if options.shared_views and len(options.views) > 1
           else {}),
    }
    return attach_info(core, info), info


class _BestAndLast(keras.callbacks.Callback):
    """Save the best-on-validation model and the last checkpoint, atomically, each epoch.

    The last checkpoint holds the optimizer state; ``state`` (a JSON file beside it)
    records the epochs done, the best monitored value and the training seconds spent, so
    that :func:`train` with ``resume`` can carry on where a killed run stopped. The
    checkpoint also carries that record in its info (``CHECKPOINT_KEY``), which wins on
    resume: a kill between the two writes leaves the state file an epoch behind.
    """

    def __init__(self, best: Path, last: Path, history_path: Path, monitor: str, *,
                 resumed: dict | None = None, history: dict | None = None) -> None:
        super().__init__()
        self.best, self.last, self.history_path, self.monitor = best, last, history_path, monitor
        self.state_path = last.with_name(last.stem.replace("last", "state", 1) + ".json")
        resumed = resumed or {}
        self.best_value = float(resumed.get("best_value", np.inf))
        self.seconds_before = float(resumed.get("seconds", 0.0))
        self.history: dict[str, list[float]] = history or {}
        self.start = time.perf_counter()
        self.epochs_done = int(resumed.get("epochs_done", 0))

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Training seconds spent, earlier runs included."""
        return self.seconds_before + time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        value = float(logs.get(self.monitor, logs.get("loss", np.inf)))
        if value < self.best_value or not self.best.exists():
            self.best_value = value
            with atomic_output(self.best, clobber=True) as tmp:
                self.model.save(tmp)
        write_text_atomic(self.history_path, json.dumps(self.history, indent=1))
        self.epochs_done = epoch + 1
        # the checkpoint carries its own progress: a kill after it is saved but before the
        # state file is would otherwise resume its weights with the epoch before's count
        progress = self.progress(complete=False)
        info_layer(self.model).info[CHECKPOINT_KEY] = progress
        try:
            with atomic_output(self.last, clobber=True) as tmp:
                self.model.save(tmp)
        finally:
            info_layer(self.model).info.pop(CHECKPOINT_KEY)
        write_text_atomic(self.state_path, json.dumps(progress, indent=1))

    def progress(self, *, complete: bool) -> dict:
        """Epochs done, best monitored value, training seconds, and whether it has ended."""
        return {"epochs_done": self.epochs_done, "best_value": self.best_value,
                "seconds": self.seconds, "complete": complete}

    def write_state(self, *, complete: bool) -> None:
        """Record progress; ``complete`` once training of this view has ended."""
        write_text_atomic(self.state_path, json.dumps(self.progress(complete=complete),
                                                      indent=1))


#: Key of a last checkpoint's own progress record in its model's info.
CHECKPOINT_KEY = "checkpoint_progress"


def _take_progress(model: keras.Model) -> dict:
    """The progress a last checkpoint saved with itself (removed from it), or {}."""
    return info_layer(model).info.pop(CHECKPOINT_KEY, None) or {}


class _EpochOrder(keras.callbacks.Callback):
    """Give each epoch the slice order and augmentation of its number, resumed runs too."""

    def __init__(self, dataset: SliceDataset) -> None:
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


class _TimeBudget(keras.callbacks.Callback):
    """Stop training (after the current batch) once ``deadline`` (perf_counter) has passed."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.stopped_early = False

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() >= self.deadline:
            self.stopped_early = True
            self.model.stop_training = True


class _CosineSchedule(keras.callbacks.Callback):
    """Linear warm-up, then cosine decay to ``floor * lr``, by time or by step.

    With ``seconds`` the position in the schedule is the elapsed share of that time
    budget; otherwise it is the share of ``total_steps`` done.
    """

    WARMUP = 0.03

    def __init__(self, lr: float, *, seconds: float | None = None, total_steps: int = 1,
                 floor: float = 0.02, seconds_done: float = 0.0, steps_done: int = 0) -> None:
        super().__init__()
        self.lr, self.seconds, self.total_steps, self.floor = lr, seconds, total_steps, floor
        self.seconds_done = seconds_done  # spent by an earlier, interrupted run
        self.start = time.perf_counter()
        self.step = steps_done

    def progress(self) -> float:
        """Share of the schedule done, 0 to 1."""
        if self.seconds:
            elapsed = self.seconds_done + time.perf_counter() - self.start
            return min(elapsed / self.seconds, 1.0)
        return min(self.step / max(self.total_steps, 1), 1.0)

    def rate(self, progress: float) -> float:
        """Learning rate at ``progress``.

        >>> s = _CosineSchedule(1.0, total_steps=100)
        >>> round(s.rate(0.0), 3), round(s.rate(0.03), 3), round(s.rate(1.0), 3)
        (0.0, 1.0, 0.02)
        """
        if progress < self.WARMUP:
            return self.lr * progress / self.WARMUP
        decay = (progress - self.WARMUP) / (1 - self.WARMUP)
        return float(self.lr * (self.floor + (1 - self.floor) * 0.5 * (1 + np.cos(np.pi * decay))))

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(max(self.rate(self.progress()), 1e-7))
        self.step += 1


def _keras_verbosity(quiet: bool) -> int:
    """0 when quiet, a live bar on a terminal, one line per epoch otherwise (logs, CI)."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def view_paths(path: Path, views: list[str]) -> list[Path]:
    """The model file of each view: ``model.keras`` for the first, ``model_<view>.keras`` after.

    >>> [p.name for p in view_paths(Path("m/model.keras"), ["axial", "coronal"])]
    ['model.keras', 'model_coronal.keras']
    """
    return [path] + [path.with_name(f"{path.stem}_{view}.keras") for view in views[1:]]


def checkpoint_paths(target: Path, view: str, views: list[str]) -> tuple[Path, Path]:
    """The last checkpoint of ``view`` and its progress file, under ``TARGET/model/checkpoints``.

    >>> [p.name for p in checkpoint_paths(Path("T"), "coronal", ["axial", "coronal"])]
    ['last_coronal.keras', 'state_coronal.json']
    """
    suffix = "" if view == views[0] else f"_{view}"
    folder = target / "model" / "checkpoints"
    return folder / f"last{suffix}.keras", folder / f"state{suffix}.json"


def read_state(path: Path) -> dict | None:
    """A view's progress file, or None when it is missing or unreadable (killed mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resumed_options(target: Path, options: TrainOptions) -> TrainOptions:
    """The options an interrupted training of ``target`` was started with, to resume it."""
    config_path = target / "model" / "config.json"
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"nothing to resume in {target}: {config_path} is missing or unreadable; "
            "start the training without --resume"
        ) from None
    known = {f for f in TrainOptions.__dataclass_fields__ if f != "builder"}
    saved = {k: v for k, v in saved.items() if k in known}
    return TrainOptions(**{**saved, "resume": True, "clobber": False, "make_model_only": False,
                           "quiet": options.quiet, "builder": options.builder})


def _refuse_unfinished(target: Path, options: TrainOptions) -> None:
    """Stop a plain rerun from mistaking an interrupted training for a finished one."""
    try:  # the views of the training that wrote the model, whatever this rerun asks
        views = check_views(json.loads((target / "model" / "config.json").read_text())["views"])
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        views = options.views
    paths = view_paths(model_path(target, options), views)
    for view, path in zip(views, paths, strict=True):
        state = read_state(checkpoint_paths(target, view, views)[1])
        if (state is not None and not state.get("complete")) or not path.exists():
            done = state.get("epochs_done", 0) if state else 0
            raise UsageError(
                f"the training in {target / 'model'} was interrupted ({view} view, after "
                f"{done} of {options.epochs} epochs); pass --resume to continue it or "
                "--clobber to start again"
            )


def _check_options(options: TrainOptions) -> None:
    """Refuse counts below 1 before anything is written."""
    for flag, value in (("--epochs", options.epochs), ("--batch-size", options.batch_size),
                        ("--devices", options.devices)):
        if value < 1:
            raise UsageError(f"{flag} {value} is below 1; give a whole number of 1 or more")


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
        if read_info(model).get("shared_network"):
            if shared:
                continue
            shared = True
        total += model.count_params()
    return total


def _clean_temporaries(folder: Path) -> None:
    """Remove the temporary files a killed run left behind (see :mod:`minc_keras.core.atomic`)."""
    for stale in folder.rglob(".*.tmp*"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def data_parallel(devices: int, batch_size: int) -> Iterator[None]:
    """Train data-parallel over ``devices`` devices inside this block (1: no change).

    Keras' distribution API replicates the weights on every device and splits each
    batch between them; it is implemented for the JAX backend
    (``KERAS_BACKEND=jax``), on GPUs, TPUs or, for testing, several host CPU devices
    (``XLA_FLAGS=--xla_force_host_platform_device_count=2``).

    Raises
    ------
    UsageError
        If the backend is not JAX, fewer devices are present, or ``batch_size`` does
        not split evenly.
    """
    if devices == 1:
        yield
        return
    backend = keras.backend.backend()
    if backend != "jax":
        raise UsageError(f"--devices {devices} needs the JAX backend (the {backend} backend is "
                         "in use); install jax and set KERAS_BACKEND=jax")
    found = keras.distribution.list_devices()
    if devices < 1 or devices > len(found):
        raise UsageError(f"--devices {devices}: {len(found)} device(s) found ({', '.join(found)})"
                         f"; give a number from 1 to {len(found)}")
    if batch_size % devices:
        raise UsageError(f"--batch-size {batch_size} does not split evenly over {devices} "
                         f"devices; give a multiple of {devices}")
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=found[:devices]))
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def train(target: str | Path, options: TrainOptions) -> TrainResult:
    """Train on ``TARGET/data`` and save ``TARGET/model/<model>.keras``.

    With several ``options.views`` one model is trained per view and saved beside the
    first; the first file's metadata lists them all, so prediction averages the views.
    An existing model is reused (not retrained) unless ``options.clobber``, as in the
    workshop. With ``options.resume`` an interrupted training continues from each view's
    last checkpoint (weights, optimizer state, epoch count, history, time spent).

    Parameters
    ----------
    target : path-like
        The run folder (prepared by :func:`minc_keras.data.prepare.prepare`).
    options : TrainOptions

    Returns
    -------
    TrainResult
    """
    target = Path(target)
    if options.resume:
        options = resumed_options(target, options)
        _clean_temporaries(target / "model")
    check_views(options.views)
    options = views_for_model(options)
    cache = SliceCache.open(target / "data")
    paths = view_paths(model_path(target, options), options.views)
    history_path = target / "model" / "history.json"
    if not options.resume and paths[0].exists() and not options.clobber \
            and not options.make_model_only:
        _refuse_unfinished(target, options)
        log.info("%s exists; evaluating it without retraining (pass --clobber to retrain)",
                 paths[0])
        parameters = _kept_parameters([p for p in paths if p.exists()], cache)
        history = json.loads(history_path.read_text()) if history_path.exists() else {}
        return TrainResult(paths[0], parameters, history, 0.0, trained=False)

    _check_options(options)
    build_network(cache, options, options.views[0])  # refuse bad model flags before writing

    if not options.resume:
        if options.clobber:  # a fresh start must not resume the old run's checkpoints
            for view in options.views:
                for stale in checkpoint_paths(target, view, options.views):
                    stale.unlink(missing_ok=True)
        write_text_atomic(target / "model" / "config.json",
                          json.dumps({k: v for k, v in asdict(options).items()
                                      if k not in ("builder", "resume")}, indent=1, default=str))
    with data_parallel(options.devices, options.batch_size):
        result = _train_views(target, cache, paths, options)
    if options.calibrate and result.trained:
        result.calibration = calibrate_model(
            paths[0], cache, batch_size=options.batch_size,
            atrophy_voxels=ATROPHY_VOXELS if options.augment_atrophy else 0.0)
    return result


def _train_views(target: Path, cache: SliceCache, paths: list[Path],
                 options: TrainOptions) -> TrainResult:
    """Train (or keep, when resuming) the network of each view, or the one they share."""
    result = TrainResult(paths[0], 0, {}, 0.0, trained=not options.make_model_only)
    spent = 0.0  # training seconds of the networks before this one, earlier runs included
    # what the training labels decide, looked at once for all views
    sampling = {} if options.make_model_only else {
        "augment": _augmenter(cache, options, volume=options.views == [VOLUME_VIEW]),
        "repeat_class": _rare_class(cache, options)}
    # the views each network learns: all of them, or one apiece
    units = [options.views] if options.shared_views else [[view] for view in options.views]
    for done, views in enumerate(units):
        view, path = views[0], paths[options.views.index(views[0])]
        copies = [(v, paths[options.views.index(v)]) for v in views[1:]]
        last, state_path = checkpoint_paths(target, view, options.views)
        state = read_state(state_path) if options.resume else None
        if state is not None and state.get("complete") and path.exists():
            log.info("%s: finished earlier, kept", _named(views))
            result.parameters += _kept_model(path, cache).count_params()
            result.histories[view] = _read_history(target, view, options.views)
            spent += float(state.get("seconds", 0.0))
            _save_for_views(path, copies, cache, clobber=True)  # a kill may have come first
            continue
        keras.utils.set_random_seed(options.seed)
        model, info = build_network(cache, options, view, ensemble=[p.name for p in paths])
        info["precision"] = options.precision
        if state is not None and last.exists():
            model = keras.saving.load_model(last)
            state = {**state, **_take_progress(model)}  # the checkpoint's own count wins
            log.info("%s: resuming after epoch %d of %d from %s", _named(views),
                     state["epochs_done"], options.epochs, last)
        else:
            state = None
            model.compile(optimizer=keras.optimizers.Adam(options.lr),
                          loss=get_loss(options.loss),
                          metrics=make_metrics(info["num_outputs"], options.metric))
        result.parameters += model.count_params()
        if options.make_model_only:
            with atomic_output(path, clobber=options.clobber) as tmp:
                model.save(tmp)
            _save_for_views(path, copies, cache, clobber=options.clobber)
            continue
        budget = None
        if options.time_budget:  # what is left, shared by the networks still to train
            budget = max((options.time_budget * 60 - spent) / (len(units) - done), 1.0)
        history, seconds = _fit(model, info, cache, options, views, path, target, budget,
                                resumed=state, **sampling)
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
        mine = {**info, "view": view,
                "slice_size": list(slice_size(cache, view, info["multiple"]))}
        mine.pop("class_offsets", None)  # prediction takes them from the first file
        with atomic_output(copy, clobber=clobber) as tmp:
            attach_info(network, mine).save(tmp)


def _read_history(target: Path, view: str, views: list[str]) -> dict:
    """The saved learning curves of one view (empty when there are none)."""
    suffix = "" if view == views[0] else f"_{view}"
    path = target / "model" / f"history{suffix}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


#: Share of training slices whose darkest class ``--augment-atrophy`` enlarges.
ATROPHY_PROBABILITY = 0.3


def _augmenter(cache: SliceCache, options: TrainOptions, *, volume: bool = False
               ) -> SliceAugmenter | VolumeAugmenter | None:
    """The training slices' (or cubes') augmentation ``options`` ask for (``None``: none)."""
    if not (options.augment or options.augment_atrophy):
        return None
    kind = VolumeAugmenter if volume else SliceAugmenter
    plain = kind() if options.augment else kind(probability=0.0, flip=0.0)
    rows = cache.by_category("train")[:4]  # a few scans tell which class is darkest
    if not (options.augment_atrophy and rows):
        return plain
    sample = (slice(None, None, 2),) * 3
    target = darkest_class(
        np.concatenate([np.asarray(cache.image(i)[sample]).ravel() for i in rows]),
        np.concatenate([cache.classes(np.asarray(cache.label(i)[sample])).ravel()
                        for i in rows]))
    if target is None:  # a brain mask, say; the recipes turn atrophy on for every task
        log.info("atrophy augmentation skipped: the labels have one class besides the "
                 "background, so there is no darker tissue class to enlarge")
        return plain
    log.info("atrophy augmentation: class %d (label %d, the darkest) enlarged in %d %% of "
             "the training %s", target, cache.class_values[target],
             round(100 * ATROPHY_PROBABILITY), "cubes" if volume else "slices")
    return replace(plain, atrophy=ATROPHY_PROBABILITY, atrophy_class=target)


def _rare_class(cache: SliceCache, options: TrainOptions) -> int | None:
    """The class whose slices ``--oversample-rare`` repeats (``None``: repeat none).

    A network of volumes always centres a share of its training cubes near this class.
    """
    rows = cache.by_category("train")
    if not ((options.oversample_rare or options.views == [VOLUME_VIEW]) and rows):
        return None
    sample = (slice(None, None, 2),) * 3
    counts = sum(np.bincount(cache.classes(np.asarray(cache.label(i)[sample])).ravel(),
                             minlength=cache.num_classes)
                 for i in rows)
    present = [c for c in range(1, cache.num_classes) if counts[c]]
    if len(present) < 2:  # a brain mask: the one class is not rare beside another
        log.info("no slices oversampled: the labels have one class besides the background")
        return None
    rare = min(present, key=lambda c: counts[c])
    what = ("a third of the training cubes centred near class %d" if options.views == [VOLUME_VIEW]
            else "slices holding class %d")
    log.info(what + " (label %d, %.1f %% of the labelled voxels)"
             + ("" if options.views == [VOLUME_VIEW] else " shown twice per epoch"),
             rare, cache.class_values[rare],
             100 * counts[rare] / sum(counts[c] for c in present))
    return rare


def _fit(model: keras.Model, info: dict, cache: SliceCache, options: TrainOptions,
         views: list[str], path: Path, target: Path, budget: float | None = None, *,
         resumed: dict | None = None, augment: SliceAugmenter | None = None,
         repeat_class: int | None = None) -> tuple[dict, float]:
    """Fit one network on ``views``, saving the best and the last checkpoint; return its history.

    ``budget`` (seconds) stops the fit when spent; the cosine schedule then runs on time.
    ``resumed`` (a progress record of :class:`_BestAndLast`) continues an interrupted fit:
    epochs, best value and seconds already spent carry on. The seconds returned include
    those of the interrupted run. ``augment`` and ``repeat_class`` are the training slices'
    augmentation and oversampled class (:func:`_augmenter`, :func:`_rare_class`). Several
    ``views`` (``--shared-views``) train the network on all their slices, interleaved; the
    checkpoints and history are then the first view's.
    """
    view = views[0]
    if view == VOLUME_VIEW:  # random cubes for training, whole scans for validation
        common = {"batch_size": options.batch_size, "num_outputs": info["num_outputs"],
                  "multiple": info["multiple"]}
        train_data = PatchDataset(cache, "train", seed=options.seed, augment=augment,
                                  rare_class=repeat_class, **common)
        validate_data = PatchDataset(cache, "validate", patch_size=None, **common)
        train_parts = [train_data]
    else:
        train_parts, validate_parts = [], []
        for each in views:
            common = {"view": each, "batch_size": options.batch_size,
                      "num_outputs": info["num_outputs"], "multiple": info["multiple"]}
            # every training step sees a full batch (the slices left over change each
            # epoch); with several devices validation batches must split evenly too
            part = SliceDataset(cache, "train", shuffle=True, seed=options.seed,
                                augment=augment, drop_remainder=True,
                                repeat_class=repeat_class, **common)
            if len(part) == 0 and options.devices == 1:  # fewer slices than one batch
                part.drop_remainder = False
            train_parts.append(part)
            validate_parts.append(SliceDataset(cache, "validate",
                                               drop_remainder=options.devices > 1, **common))
        train_data, validate_data = train_parts[0], validate_parts[0]
        if len(views) > 1:
            train_data = InterleavedViews(train_parts, shuffle=True, seed=options.seed)
            validate_data = InterleavedViews(validate_parts)
    if len(train_data) == 0:
        raise UsageError(f"the training split in {target / 'data'} holds no slices to learn from"
                         if train_data.num_slices == 0 else
                         f"the training split in {target / 'data'} holds fewer slices "
                         f"({train_data.num_slices}) than one batch; lower --batch-size")
    unit = ("cubes per epoch", "scans") if view == VOLUME_VIEW else ("slices", "slices")
    log.info("training %s, %s (%d parameters) on %d %s, validating on %d %s, on %s",
             options.model_type, _named(views), model.count_params(), train_data.num_slices,
             unit[0], validate_data.num_slices, unit[1], accelerator() or "the CPU")
    last, _ = checkpoint_paths(target, view, options.views)
    suffix = "" if view == options.views[0] else f"_{view}"
    history = {}
    if resumed:  # the curves up to the checkpoint (a kill may have come between the two)
        history = {key: values[:resumed["epochs_done"]]
                   for key, values in _read_history(target, view, options.views).items()}
    saver = _BestAndLast(path, last, target / "model" / f"history{suffix}.json",
                         "val_loss" if len(validate_data) else "loss",
                         resumed=resumed, history=history)
    first_epoch = saver.epochs_done
    to_train = first_epoch < options.epochs and (budget is None or saver.seconds_before < budget)
    compiling = 0.0
    if to_train and options.jit_compile and view == VOLUME_VIEW:
        # measured: its step broke into many graphs and hit Dynamo's recompile limit
        log.info("volume view: trains eagerly (--jit-compile is for slice views: the 3-D "
                 "network's step does not compile into one graph)")
    elif to_train and options.jit_compile:
        compiled = True
        for part in train_parts:  # one graph per view's slice size, compiled up front
            seconds, compiled = compile_train_step(model, part)
            compiling += seconds
        if compiled:
            log.info("%s: training step compiled in %.0f s", _named(views), compiling)
        saver.seconds_before += compiling  # spent, as training time is
        if budget is not None and compiling > budget / 4:
            log.warning("%s: compiling took %.0f s of its %.0f s; with budgets this "
                        "short, train without --jit-compile", _named(views), compiling, budget)
    callbacks: list[keras.callbacks.Callback] = [_EpochOrder(train_data), saver]
    if budget is not None:
        left = budget - saver.seconds_before
        log.info("%s: training for at most %.1f min", _named(views), left / 60)
        # leave room for the last validation and checkpoint after the deadline
        callbacks.insert(0, _TimeBudget(time.perf_counter() + left - budget * 0.03))
    if options.schedule == "cosine":  # over the training time, compiling left out
        callbacks.insert(0, _CosineSchedule(options.lr,
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
                      verbose=_keras_verbosity(options.quiet))
    saver.write_state(complete=True)
    return saver.history, saver.seconds
