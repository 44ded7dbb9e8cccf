"""Training: options and recipes, the network, callbacks, checkpoints, the trainer.

``TrainOptions``, ``RunControl``, ``TrainResult`` and ``train`` load on first use, so
``from minc_keras.training import TrainOptions`` does not import Keras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_API = {
    "TrainOptions": "minc_keras.training.options",
    "RunControl": "minc_keras.training.options",
    "TrainResult": "minc_keras.training.trainer",
    "train": "minc_keras.training.trainer",
}

__all__ = ["RunControl", "TrainOptions", "TrainResult", "train"]

if TYPE_CHECKING:
    from minc_keras.training.options import RunControl, TrainOptions
    from minc_keras.training.trainer import TrainResult, train


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'minc_keras.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
