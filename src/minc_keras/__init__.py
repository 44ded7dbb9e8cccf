"""minc-keras: deep learning for brain MRI segmentation, MINC and NIfTI in and out.

The user API is importable from here; each name is loaded on first use, so
``import minc_keras`` stays light (it does not import Keras or a backend)::

    from minc_keras import prepare, train, TrainOptions, evaluate, predict_scans

See docs/architecture.md for the packages behind these names.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Keras reads its backend once, at first import. torch is the default: measured fastest for
# these 2-D networks on a CPU (benchmarks/README.md, "Backends"). A user's own KERAS_BACKEND
# (jax, tensorflow) always wins.
os.environ.setdefault("KERAS_BACKEND", "torch")

#: Public name -> the module that defines it.
_API = {
    "prepare": "minc_keras.workflows",
    "train": "minc_keras.workflows",
    "evaluate": "minc_keras.workflows",
    "run": "minc_keras.workflows",
    "TrainOptions": "minc_keras.training.options",
    "register_model": "minc_keras.models",
    "load_segmenter": "minc_keras.inference.segmenter",
    "segment_volume": "minc_keras.inference.segment",
    "predict_scans": "minc_keras.predict.runner",
    "read_volume": "minc_keras.io",
    "write_volume": "minc_keras.io",
    "Volume": "minc_keras.io",
}

__all__ = [
    "TrainOptions", "Volume", "__version__", "evaluate", "load_segmenter", "predict_scans",
    "prepare", "read_volume", "register_model", "run", "segment_volume", "train", "write_volume",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from minc_keras.inference.segment import segment_volume
    from minc_keras.inference.segmenter import load_segmenter
    from minc_keras.io import Volume, read_volume, write_volume
    from minc_keras.models import register_model
    from minc_keras.predict.runner import predict_scans
    from minc_keras.training.options import TrainOptions
    from minc_keras.workflows import evaluate, prepare, run, train


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'minc_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
