"""Everything prediction needs, stored inside the ``.keras`` file itself.

:class:`SegmentationInfo` is an identity layer whose config carries the class mapping,
intensity normalisation, view, slice-size multiple and provenance. It is registered
with Keras, so ``keras.saving.load_model("model.keras")`` restores it with no extra
code, and :func:`read_info` finds it again.
"""

from __future__ import annotations

import copy
from pathlib import Path

import keras

from minc_keras.core.atomic import atomic_output

INFO_LAYER = "minc_keras_info"


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


def attach_info(model: keras.Model, info: dict) -> keras.Model:
    """Return a model computing the same as ``model`` whose last layer carries ``info``.

    Parameters
    ----------
    model : keras.Model
        Any Keras model with one input and one output (a zoo model or a user's own).
    info : dict
        Metadata for prediction.
    """
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


def read_info(model: keras.Model) -> dict:
    """A copy of the ``info`` dictionary of a model built by :func:`attach_info`.

    Raises
    ------
    KeyError
        If the model carries no minc-keras information.
    """
    return copy.deepcopy(info_layer(model).info)


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
