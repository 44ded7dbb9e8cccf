"""``--threads`` and ``--device``: set the process up before a command imports Keras.

:func:`set_up_compute` writes the environment of
:class:`~minc_keras.core.compute.Compute` (read by the backend when it is imported, and
inherited by every process a command starts), then does what only the backend can: set
torch's thread count, and check that ``--device cuda`` has a CUDA device to run on. The
command line imports no backend before a command runs, so the environment takes.
"""

from __future__ import annotations

import argparse
import importlib
import os

from minc_keras.core.compute import Compute, configure_environment
from minc_keras.core.errors import UsageError


def _missing_cuda(backend: str) -> str | None:
    """Why ``backend`` has no CUDA device to compute on, or None when it has one."""
    module = importlib.import_module(backend)
    if backend == "torch":
        if module.version.cuda is None:
            return "this torch is a CPU-only build"
        return None if module.cuda.is_available() else "torch finds no CUDA device"
    if backend == "jax":
        if any(device.platform == "gpu" for device in module.devices()):
            return None
        return "JAX finds no GPU"
    if backend == "tensorflow":
        return None if module.config.list_physical_devices("GPU") else \
            "TensorFlow finds no GPU"
    return f"the {backend} backend runs on no CUDA device"


def set_up_compute(args: argparse.Namespace) -> Compute:
    """Apply a command's ``--threads`` and ``--device`` to this process and its children.

    Raises
    ------
    UsageError
        For ``--threads`` below 1, or ``--device cuda`` where no CUDA device is found.
    """
    compute = Compute(threads=getattr(args, "threads", None),
                      device=getattr(args, "device", None))
    if compute.is_default:
        return compute
    configure_environment(compute)
    backend = os.environ.get("KERAS_BACKEND", "torch")
    if compute.threads is not None and backend == "torch":  # its own pool, not only OpenMP's
        import torch

        torch.set_num_threads(compute.threads)
    if compute.device == "cuda":
        reason = _missing_cuda(backend)
        if reason is not None:
            raise UsageError(f"`device` cuda needs a CUDA GPU and {reason}; leave `device` "
                             "out or give `device` cpu")
    return compute
