"""Loading a model saved by ``minc-keras train``, with one clear error when it is not one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras

from minc_keras.core.errors import DatasetError
from minc_keras.models.info import ModelInfo, read_info
from minc_keras.models.precision import prediction_config

#: What loading a file that is not a minc-keras model raises: not a zip archive, an
#: unreadable file, a config Keras cannot deserialise, no information layer.
NOT_A_MODEL = (zipfile.BadZipFile, OSError, ValueError, TypeError, KeyError)


def load_trained(path: str | Path, *, compile: bool = True) -> tuple[keras.Model, ModelInfo]:
    """Load a model saved by ``train`` and its metadata, with a clear error otherwise.

    ``compile=False`` skips the loss, metrics and optimizer state (prediction only).

    Raises
    ------
    DatasetError
        If there is no file at ``path``, or it is not a model saved by minc-keras (the
        failures of :data:`NOT_A_MODEL`); any other exception is a bug and propagates.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"no model file at {path}; check the path (train one with `minc-keras train`)"
        )
    try:
        model = _load_model(path, compile)
        info = read_info(model)
    except NOT_A_MODEL as exc:
        # one line: Keras messages span several, and a KeyError's str() is quoted
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        detail = " ".join(str(detail).split()).rstrip(".") or type(exc).__name__
        raise DatasetError(
            f"{path} is not a model saved by this version of minc-keras ({detail}); "
            "retrain it with `clobber`"
        ) from exc
    return model, info


def _load_model(path: Path, compile: bool) -> keras.Model:
    """``keras.saving.load_model``, in float32 where the saved 16-bit policy would be slow.

    A model trained with ``--precision bfloat16`` or ``float16`` keeps that policy in its
    file; on a machine without native arithmetic for it the layers are rebuilt in float32
    (:func:`~minc_keras.models.precision.prediction_config`) and the saved weights loaded into them.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return keras.saving.load_model(path, compile=compile)  # its own error, if any
    config, changed = prediction_config(config, where=str(path))
    if not changed:
        return keras.saving.load_model(path, compile=compile)
    compile_config = config.pop("compile_config", None)
    model = keras.saving.deserialize_keras_object(config)
    model.load_weights(path)
    if compile and compile_config:  # after the weights: the optimizer starts afresh
        model.compile_from_config(compile_config)
    return model
