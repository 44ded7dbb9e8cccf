"""Data-parallel training over several devices (Keras' distribution API)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from minc_keras.core.errors import UsageError


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
        raise UsageError(f"`devices` {devices} needs the JAX backend (the {backend} backend is "
                         "in use); install jax and set KERAS_BACKEND=jax")
    found = keras.distribution.list_devices()
    if devices < 1 or devices > len(found):
        raise UsageError(f"`devices` {devices}: {len(found)} device(s) found ({', '.join(found)})"
                         f"; give a number from 1 to {len(found)}")
    if batch_size % devices:
        raise UsageError(f"`batch_size` {batch_size} does not split evenly over {devices} "
                         f"devices; give a multiple of {devices}")
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=found[:devices]))
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)
