"""The network a training builds: its views, its outputs, the metadata prediction reads."""

from __future__ import annotations

import keras
import numpy as np

from minc_keras import __version__
from minc_keras.core.errors import UsageError
from minc_keras.data.cache import CROP_MARGIN, SliceCache
from minc_keras.data.dataset import slice_size
from minc_keras.data.label_table import mirror_classes, read_label_table
from minc_keras.data.patches import PATCH_SIZE
from minc_keras.models import SpatialMultiple, build_model, required_multiple, spatial_dims
from minc_keras.models.info import ModelInfo, attach_info
from minc_keras.models.precision import dtype_policy
from minc_keras.preprocessing.transforms import VIEW_AXES, VOLUME_VIEW
from minc_keras.training.options import TrainOptions


def check_views(views: list[str]) -> list[str]:
    """Validate ``views``: known names, no repeats; ``volume`` stands alone.

    >>> check_views(["axial", "coronal"])
    ['axial', 'coronal']
    """
    unknown = [v for v in views if v not in (*VIEW_AXES, VOLUME_VIEW)]
    if unknown or not views or len(set(views)) != len(views) or \
            (VOLUME_VIEW in views and len(views) > 1):
        raise UsageError(
            f"`views` {','.join(views)} is not valid; give distinct views among "
            f"{', '.join(VIEW_AXES)}, e.g. `views` axial,coronal,sagittal (or `views` "
            f"{VOLUME_VIEW} alone, for `model_type` unet3d)"
        )
    return list(views)


def is_volume_network(options: TrainOptions) -> bool:
    """Whether ``options`` build a network of whole volumes (3-D) rather than of slices."""
    return options.builder is None and spatial_dims(options.model_type) == 3


def views_for_model(options: TrainOptions) -> TrainOptions:
    """``options`` with the views its network takes: ``volume`` for a network of volumes.

    A 3-D network given the default ``views`` (axial) gets ``volume``; one given other
    slicing views (a recipe's three, say), or a 2-D network given ``volume``, is refused in
    one sentence.
    """
    volume = is_volume_network(options)
    if volume and options.views in (["axial"], [VOLUME_VIEW]):
        return options.replace(views=[VOLUME_VIEW])
    if volume:
        raise UsageError(
            f"`model_type` {options.model_type} segments whole volumes, not slices of the "
            f"{','.join(options.views)} view{'s' * (len(options.views) > 1)}; give `views` "
            f"{VOLUME_VIEW} (the views may come from a `recipe`)")
    if VOLUME_VIEW in options.views:
        raise UsageError(
            f"`views` {VOLUME_VIEW} needs a network of volumes (`model_type` unet3d), not "
            f"{options.model_type}")
    return options


def num_outputs(num_classes: int, options: TrainOptions) -> int:
    """Output channels: one sigmoid channel for a binary target, else one per class.

    >>> num_outputs(2, TrainOptions(activation_output="sigmoid")), num_outputs(3, TrainOptions())
    (1, 3)
    """
    if options.activation_output != "sigmoid":
        return num_classes
    if num_classes != 2:
        raise UsageError(
            f"`activation_output` sigmoid needs a binary label (background and one class), but "
            f"the labels have {num_classes} classes; use `activation_output` softmax"
        )
    return 1


def build_network(cache: SliceCache, options: TrainOptions, view: str = "axial", *,
                  ensemble: list[str] | None = None) -> tuple[keras.Model, ModelInfo]:
    """The network for one view of this cache, with its prediction metadata attached.

    Parameters
    ----------
    cache : SliceCache
        The prepared data (its classes, scans and slice sizes).
    options : TrainOptions
        The network's options (``builder``, ``model_type`` and its parameters, ``precision``).
    view : str
        The view it learns (``volume``: a network of whole volumes).
    ensemble : list of str, optional
        The model file names of every view, recorded for prediction.

    Returns
    -------
    (keras.Model, dict)
        The network, and the metadata it carries (:mod:`minc_keras.models.info`).
    """
    wanted = dtype_policy(options.precision)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(wanted)
    try:
        return _build_network(cache, options, view, ensemble)
    finally:
        keras.config.set_dtype_policy(policy)


def _core(options: TrainOptions, outputs: int, volume: bool) -> tuple[keras.Model, int]:
    """The network itself, and the multiple its input sides must be padded to."""
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
    return core, multiple


def _class_names(cache: SliceCache, options: TrainOptions) -> list[str]:
    """A name per class: the label table's, the user's, or ``background``, ``label_<value>``."""
    if options.label_table is not None:
        if options.class_names is not None:
            raise UsageError("give the class names either by `class_names` or by `label_table`, "
                             "not both")
        return read_label_table(options.label_table).class_names(cache.class_values)
    if options.class_names is None:
        return [f"label_{v}" if v else "background" for v in cache.class_values]
    if len(options.class_names) != cache.num_classes:
        raise UsageError(
            f"`class_names` gives {len(options.class_names)} names but the labels have "
            f"{cache.num_classes} classes (values {cache.class_values}); give one name per "
            "value, background first"
        )
    return list(options.class_names)


def class_mirror(cache: SliceCache, options: TrainOptions) -> tuple[int, ...] | None:
    """The class each class becomes under a left-right flip; None when none is paired."""
    names = _class_names(cache, options)
    mirror = mirror_classes(names)
    return tuple(mirror) if mirror != list(range(len(names))) else None


def _mirror(names: list[str]) -> dict:
    """``mirror_classes`` of the info, when some classes are left/right pairs."""
    mirror = mirror_classes(names)
    return {"mirror_classes": mirror} if mirror != list(range(len(names))) else {}


def _build_network(cache: SliceCache, options: TrainOptions, view: str,
                   ensemble: list[str] | None) -> tuple[keras.Model, ModelInfo]:
    outputs = num_outputs(cache.num_classes, options)
    volume = view == VOLUME_VIEW
    core, multiple = _core(options, outputs, volume)
    names = _class_names(cache, options)
    voxel = np.median([np.sqrt((np.asarray(s.affine)[:3, :3] ** 2).sum(0)) for s in cache.scans],
                      axis=0)
    info = ModelInfo.from_dict({
        "minc_keras_version": __version__,
        "keras_backend": keras.backend.backend(),
        "model_type": options.model_type if options.builder is None else "custom-builder",
        "class_values": cache.class_values,
        "class_names": names, **_mirror(names),
        "num_outputs": outputs, "view": view, "multiple": multiple,
        # a half-resolution network is run once more per slice, a pixel shifted, and the
        # two averaged (benchmarks/README.md)
        "shift_passes": options.input_stride if options.builder is None else 1,
        # a network of volumes sees whole scans, padded to its multiple, at prediction
        **({"patch_size": PATCH_SIZE} if volume else
           {"slice_size": list(slice_size(cache, view, multiple))}),
        "normalisation": {"method": "percentile", "low": 0.5, "high": 99.5, "clip": 1.5},
        "crop_margin": CROP_MARGIN, "voxel_sizes_mm": [float(v) for v in voxel],
        **_foreground_range(cache),
        "source": cache.manifest.get("config", {}),
        "ensemble": list(ensemble or []),
        # one network in every view's file: its parameters count once
        "shared_network": options.shared_views and len(options.views) > 1,
    })
    return attach_info(core, info), info


def _foreground_range(cache: SliceCache) -> dict:
    """``{"foreground_ml": [smallest, largest]}`` of the cached scans (``{}`` if unrecorded).

    Prediction refuses scans far above it (a whole head given to a model of brains).
    """
    volumes = [scan.foreground_ml for scan in cache.scans]
    if not volumes or any(v is None for v in volumes):
        return {}
    return {"foreground_ml": [float(min(volumes)), float(max(volumes))]}
