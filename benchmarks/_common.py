"""Shared helpers for the benchmark scripts: data location, timing, machine rates."""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import numpy as np

import minc_keras  # noqa: F401  (imported before keras: it picks the default backend)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_seconds(fn, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate, in GFLOP/s: the faster of two BLAS.

    One library's matmul is not the machine's: on the AMD EPYC (Zen 5) of 2026-12-02 the
    Keras backend's (PyTorch's MKL) ran at 175 GFLOP/s, numpy's (OpenBLAS) at 215, and a
    U-Net's convolutions (oneDNN) trained at 198. So both are measured, the median of
    ``repeats`` each, and the faster counts.
    """
    import keras

    a = np.random.default_rng(0).random((n, n), np.float32)
    tensor = keras.ops.convert_to_tensor(a)
    keras.ops.matmul(tensor, tensor)  # warm-up
    backend = median_seconds(
        lambda: keras.ops.convert_to_numpy(keras.ops.matmul(tensor, tensor)), repeats)
    a @ a
    blas = median_seconds(lambda: a @ a, repeats)
    return 2 * n**3 / min(backend, blas) / 1e9


def conv_flops_per_slice(model, *size: int) -> float:
    """Forward FLOPs (2 x multiply-adds) of the convolutions for one slice (or cube).

    ``size`` is ``(height, width)`` of a slice, or ``(x, y, z)`` of a cube for a network
    of volumes.
    """
    import keras

    total = 0.0
    probe = keras.models.clone_model(model, input_tensors=keras.Input((*size, 1)))
    for layer in _conv_layers(probe):
        out = layer.output.shape
        spatial = out[2:] if layer.data_format == "channels_first" else out[1:-1]
        positions = float(np.prod(spatial))
        if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
            positions /= np.prod(layer.strides)  # each input pixel meets the kernel once
        total += 2.0 * positions * float(np.prod(layer.kernel.shape))
    return total


def _conv_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _conv_layers(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D,
                                keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
            yield layer
