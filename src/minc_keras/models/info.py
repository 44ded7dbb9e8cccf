"""Everything prediction needs, stored inside the ``.keras`` file itself.

:class:`SegmentationInfo` is an identity layer whose config carries a JSON dictionary:
the class mapping, preprocessing, view, slice-size multiple and provenance. It is
registered with Keras, so ``keras.saving.load_model("model.keras")`` restores it with no
extra code; :func:`read_info` finds it again and returns it as a typed
:class:`ModelInfo`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras

from minc_keras.core.atomic import atomic_output
from minc_keras.preprocessing.preprocessor import Preprocessor

INFO_LAYER = "minc_keras_info"
#: The format tag of the info a model carries.
INFO_FORMAT = "minc-keras/1"


@dataclass
class ModelInfo:
    """What a trained model records about itself, typed.

    Stored in the model as a JSON dictionary (:meth:`to_dict`, :meth:`from_dict`); keys
    this version does not know are kept in :attr:`extra` and written back, so files of
    older and newer versions load and round-trip. Optional fields left at None are not
    written.

    Attributes
    ----------
    class_values : list of int
        Original label value of each class index 0..K-1.
    class_names : list of str
        A name per class, background first.
    mirror_classes : list of int, optional
        The class each class becomes under a left-right flip (Left X <-> Right X, the
        others themselves), from the label table; None when no class is paired.
    num_outputs : int
        Channels of the network's output: K (softmax), or 1 (a single sigmoid).
    view : str
        ``axial``, ``coronal``, ``sagittal``, or ``volume`` for a network of volumes.
    multiple : int
        Input sides are padded to a multiple of this.
    shift_passes : int
        Passes per slice at prediction, each shifted by a pixel, averaged.
    normalisation, crop_margin, voxel_sizes_mm
        The preprocessing (:meth:`preprocessor`).
    foreground_ml : [float, float], optional
        The smallest and largest non-zero volume (mL) of the training scans: a scan far
        above it is not what the model learnt from (a whole head given to a model of
        skull-stripped brains; :mod:`minc_keras.preprocessing.plausibility`).
    ensemble : list of str
        File names of every view's model, this one first; empty for a single model.
    shared_network : bool
        The views' files hold one network (its parameters count once).
    class_offsets : list of float, optional
        Per-class probability offsets fitted by calibration; ``calibration`` says how.
    slice_size, patch_size
        The training input size (provenance; prediction pads each scan itself).
    model_type, keras_backend, minc_keras_version, source, format
        Provenance: network name, Keras backend, package version,
        the data's source configuration, and the format tag.
    extra : dict
        Keys this version does not know (also the checkpoint's progress record).

    Examples
    --------
    >>> info = ModelInfo.from_dict({"class_values": [0, 1], "num_outputs": 1, "new": 3})
    >>> info.class_names, info.extra, info.to_dict()["new"]
    (['background', 'label_1'], {'new': 3}, 3)
    """

    class_values: list[int] = field(default_factory=lambda: [0, 1])
    class_names: list[str] = field(default_factory=list)
    mirror_classes: list[int] | None = None
    num_outputs: int = 0
    view: str = "axial"
    multiple: int = 1
    shift_passes: int = 1
    normalisation: dict | None = None
    crop_margin: int | None = None
    voxel_sizes_mm: list[float] | None = None
    foreground_ml: list[float] | None = None
    ensemble: list[str] = field(default_factory=list)
    shared_network: bool = False
    class_offsets: list[float] | None = None
    calibration: dict | None = None
    slice_size: list[int] | None = None
    patch_size: int | list[int] | None = None
    model_type: str | None = None
    keras_backend: str | None = None
    minc_keras_version: str | None = None
    source: dict | None = None
    format: str | None = INFO_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_values = [int(v) for v in self.class_values]
        if not self.class_names:
            self.class_names = [f"label_{v}" if v else "background" for v in self.class_values]
        # a file that does not say: one softmax channel per class
        self.num_outputs = int(self.num_outputs or len(self.class_values))
        self.multiple, self.shift_passes = int(self.multiple), int(self.shift_passes)

    @classmethod
    def from_dict(cls, info: dict) -> ModelInfo:
        """The typed form of a stored info dictionary (unknown keys go to ``extra``)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        info = copy.deepcopy(dict(info))
        extra = {k: v for k, v in info.items() if k not in known}
        return cls(**{k: v for k, v in info.items() if k in known}, extra=extra)

    def to_dict(self) -> dict:
        """The JSON dictionary stored in the model (None and a False ``shared_network``
        left out, unknown keys kept)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        if not self.shared_network:
            out.pop("shared_network")
        return {**out, **copy.deepcopy(self.extra)}

    @property
    def classes(self) -> int:
        """Classes the network tells apart (2 for a single sigmoid output)."""
        return max(self.num_outputs, 2)

    @property
    def preprocessor(self) -> Preprocessor:
        """The preprocessing the model was trained with, to apply at prediction."""
        return Preprocessor.from_info_fields(self.normalisation, self.crop_margin,
                                             self.voxel_sizes_mm)


@keras.saving.register_keras_serializable(package="minc_keras")
class SegmentationInfo(keras.layers.Layer):
    """Identity layer that carries a JSON-serialisable ``info`` dictionary.

    Parameters
    ----------
    info : dict
        Class values and names, normalisation, view, input multiple, versions.
    """

    def __init__(self, info: dict | None = None, **kwargs) -> None:
        kwargs.setdefault("name", INFO_LAYER)
        super().__init__(**kwargs)
        self.info = copy.deepcopy(info or {})

    def call(self, inputs):
        """Return ``inputs`` unchanged."""
        return inputs

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict:
        """Layer config including ``info``."""
        return {**super().get_config(), "info": copy.deepcopy(self.info)}


def attach_info(model: keras.Model, info: dict | ModelInfo) -> keras.Model:
    """Return a model computing the same as ``model`` whose last layer carries ``info``.

    Parameters
    ----------
    model : keras.Model
        Any Keras model with one input and one output (a zoo model or a user's own).
    info : dict or ModelInfo
        Metadata for prediction (stored as a JSON dictionary).
    """
    if isinstance(info, ModelInfo):
        info = info.to_dict()
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    # float32 whatever the global policy: probabilities leave the network at full precision
    outputs = SegmentationInfo(info, dtype="float32")(model(inputs))
    return keras.Model(inputs, outputs, name=model.name)


def info_layer(model: keras.Model) -> SegmentationInfo:
    """The layer of a model built by :func:`attach_info` that carries its ``info``.

    Raises
    ------
    KeyError
        If the model carries no minc-keras information.
    """
    for layer in model.layers:
        if isinstance(layer, SegmentationInfo):
            return layer
    raise KeyError("model has no minc-keras information layer")


def read_info(model: keras.Model) -> ModelInfo:
    """The metadata of a model built by :func:`attach_info` (a copy).

    Raises
    ------
    KeyError
        If the model carries no minc-keras information.
    """
    return ModelInfo.from_dict(info_layer(model).info)


def update_info(path: Path, changes: dict) -> None:
    """Merge ``changes`` into the ``info`` of the model saved at ``path``, atomically.

    The model is saved again whole (weights, and optimizer state if it had one).
    """
    import minc_keras.models  # noqa: F401  (registers the custom layers and losses)

    model = keras.saving.load_model(path)
    try:
        info_layer(model).info.update(copy.deepcopy(changes))
    except KeyError:
        raise KeyError(f"{path} has no minc-keras information layer") from None
    with atomic_output(path, clobber=True) as tmp:
        model.save(tmp)


def core_model(model: keras.Model) -> keras.Model:
    """The wrapped network inside a model built by :func:`attach_info`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    return model
