"""``minc-keras train``: fit a network on the prepared cache, keep the best checkpoint."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from minc_keras import __version__
from minc_keras.atomic import atomic_output, write_text_atomic
from minc_keras.data.cache import CROP_MARGIN, SliceCache
from minc_keras.data.dataset import SliceDataset, slice_size
from minc_keras.errors import UsageError
from minc_keras.model_info import attach_info
from minc_keras.models import build_model, get_loss, make_metrics, required_multiple

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Model and training options; the defaults are the workshop's."""

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
    pad: int = 0
    view: str = "axial"
    class_names: list[str] | None = None
    model_name: str = "model.keras"
    seed: int = 0
    clobber: bool = False
    make_model_only: bool = False
    quiet: bool = False
    builder: Callable | None = field(default=None, repr=False)


@dataclass
class TrainResult:
    """Where the model went and how training went."""

    model_path: Path
    parameters: int
    history: dict
    seconds: float
    trained: bool


def num_outputs(num_classes: int, options: TrainOptions) -> int:
    """Output channels: one sigmoid channel for a binary target, else one per class."""
    binary = options.activation_output == "sigmoid" or options.loss == "binary_crossentropy"
    if binary and num_classes == 2:
        return 1
    if binary and num_classes > 2 and options.activation_output == "sigmoid":
        raise UsageError(
            f"--activation-output sigmoid needs a binary label, but the labels have "
            f"{num_classes} classes; use --activation-output softmax"
        )
    return num_classes


def model_path(target: Path, options: TrainOptions) -> Path:
    """``TARGET/model/<name>.keras`` (a workshop ``.hdf5`` name becomes ``.keras``)."""
    name = Path(options.model_name).name
    if not name.endswith(".keras"):
        name = Path(name).stem + ".keras"
    return target / "model" / name


def build_network(cache: SliceCache, options: TrainOptions) -> tuple[keras.Model, dict]:
    """The network for this cache with its prediction metadata attached."""
    outputs = num_outputs(cache.num_classes, options)
    if options.builder is not None:
        core = options.builder((None, None, 1), outputs)
        multiple = max(2 ** options.pad, 1)
    else:
        core = build_model(options.model_type, num_classes=outputs,
                           activation_hidden=options.activation_hidden,
                           activation_output=options.activation_output, nK=options.nK,
                           kernel_size=options.kernel_size, drop_out=options.drop_out,
                           n_dil=options.n_dil)
        multiple = max(2 ** options.pad, required_multiple(options.model_type))
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
        "num_outputs": outputs, "view": options.view, "multiple": multiple,
        "slice_size": list(slice_size(cache, options.view, multiple)),
        "normalisation": {"method": "percentile", "low": 0.5, "high": 99.5, "clip": 1.5},
        "crop_margin": CROP_MARGIN, "voxel_sizes_mm": [float(v) for v in voxel],
        "source": cache.manifest.get("config", {}),
    }
    return attach_info(core, info), info


class _BestAndLast(keras.callbacks.Callback):
    """Save the best-on-validation model atomically, and the latest for resuming."""

    def __init__(self, best: Path, last: Path, history_path: Path, monitor: str) -> None:
        super().__init__()
        self.best, self.last, self.history_path, self.monitor = best, last, history_path, monitor
        self.best_value = np.inf
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        value = float(logs.get(self.monitor, logs.get("loss", np.inf)))
        if value < self.best_value or not self.best.exists():
            self.best_value = value
            with atomic_output(self.best, clobber=True) as tmp:
                self.model.save(tmp)
        with atomic_output(self.last, clobber=True) as tmp:
            self.model.save(tmp)
        write_text_atomic(self.history_path, json.dumps(self.history, indent=1))


def _keras_verbosity(quiet: bool) -> int:
    """0 when quiet, a live bar on a terminal, one line per epoch otherwise (logs, CI)."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def train(target: str | Path, options: TrainOptions) -> TrainResult:
    """Train on ``TARGET/data`` and save ``TARGET/model/<model>.keras``.

    An existing model is reused (not retrained) unless ``options.clobber``, as in the
    workshop.

    Parameters
    ----------
    target : path-like
        The run folder (prepared by :func:`minc_keras.prepare.prepare`).
    options : TrainOptions

    Returns
    -------
    TrainResult
    """
    target = Path(target)
    cache = SliceCache.open(target / "data")
    path = model_path(target, options)
    history_path = target / "model" / "history.json"
    if path.exists() and not options.clobber and not options.make_model_only:
        log.info("%s exists; evaluating it without retraining (pass --clobber to retrain)", path)
        model = keras.saving.load_model(path)
        history = json.loads(history_path.read_text()) if history_path.exists() else {}
        return TrainResult(path, model.count_params(), history, 0.0, trained=False)

    keras.utils.set_random_seed(options.seed)
    model, info = build_network(cache, options)
    model.compile(optimizer=keras.optimizers.Adam(options.lr), loss=get_loss(options.loss),
                  metrics=make_metrics(info["num_outputs"], options.metric))
    parameters = model.count_params()
    if options.make_model_only:
        with atomic_output(path, clobber=options.clobber) as tmp:
            model.save(tmp)
        return TrainResult(path, parameters, {}, 0.0, trained=False)

    common = {"view": options.view, "batch_size": options.batch_size,
              "num_outputs": info["num_outputs"], "multiple": info["multiple"]}
    train_data = SliceDataset(cache, "train", shuffle=True, seed=options.seed, **common)
    validate_data = SliceDataset(cache, "validate", **common)
    if train_data.num_slices == 0:
        raise UsageError(f"the training split in {target / 'data'} holds no slices to learn from")
    log.info("training %s (%d parameters) on %d slices, validating on %d", options.model_type,
             parameters, train_data.num_slices, validate_data.num_slices)
    write_text_atomic(target / "model" / "config.json",
                      json.dumps({k: v for k, v in asdict(options).items() if k != "builder"},
                                 indent=1, default=str))
    saver = _BestAndLast(path, target / "model" / "checkpoints" / "last.keras", history_path,
                         "val_loss" if validate_data.num_slices else "loss")
    start = time.perf_counter()
    model.fit(train_data, validation_data=validate_data if validate_data.num_slices else None,
              epochs=options.epochs, callbacks=[saver], verbose=_keras_verbosity(options.quiet))
    seconds = time.perf_counter() - start
    return TrainResult(path, parameters, saver.history, seconds, trained=True)
