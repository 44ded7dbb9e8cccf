"""What a process computes on: how many CPU threads, and the CPU or a CUDA GPU.

The thread pools of BLAS and OpenMP, and which GPUs a process may see, are read from the
environment once, when the backend is imported. :func:`configure_environment` therefore
writes them into ``os.environ`` before Keras is imported, and every process started
afterwards (predict's worker processes, a local Dask cluster's workers) inherits them.
What only the imported backend can do (set torch's thread count, check that a CUDA device
is there) is the caller's, once the environment is set: the command line does it
(:mod:`minc_keras.cli.main`). This module imports no backend.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

from minc_keras.core.errors import UsageError

log = logging.getLogger(__name__)

#: The environment variables that size the thread pools of OpenMP and the BLAS libraries.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

#: The devices a process can be pinned to.
DEVICES = ("cpu", "cuda")

#: Modules that read the environment of :func:`compute_environment` when imported.
BACKEND_MODULES = ("keras", "torch", "jax", "tensorflow")


@dataclass(frozen=True)
class Compute:
    """The CPU threads and the device of a process; ``None`` leaves the default.

    Parameters
    ----------
    threads : int, optional
        Threads of torch's intra-op pool and of OpenMP and BLAS, per process.
    device : {"cpu", "cuda"}, optional
        ``cpu`` hides every GPU; ``cuda`` requires one.

    Examples
    --------
    >>> Compute(threads=2, device="cpu").environment()["OMP_NUM_THREADS"]
    '2'
    >>> Compute(threads=0)
    Traceback (most recent call last):
    ...
    minc_keras.core.errors.UsageError: `threads` 0 is below 1; give a whole number of 1 or more
    """

    threads: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"`threads` {self.threads} is below 1; give a whole number of 1 "
                             "or more")
        if self.device is not None and self.device not in DEVICES:
            raise UsageError(f"`device` {self.device} is not known; give one of "
                             f"{', '.join(DEVICES)}")

    @property
    def is_default(self) -> bool:
        """Whether nothing is set (the process is left as it is)."""
        return self.threads is None and self.device is None

    def environment(self) -> dict[str, str]:
        """The environment variables that make these settings, for the backend to read.

        ``cpu`` empties ``CUDA_VISIBLE_DEVICES`` (no process sees a GPU) and names the CPU
        to Keras' torch backend (which would otherwise take Apple's MPS) and to JAX;
        ``cuda`` names CUDA to Keras' torch backend.

        >>> sorted(Compute(device="cpu").environment().items())[:2]
        [('CUDA_VISIBLE_DEVICES', ''), ('JAX_PLATFORMS', 'cpu')]
        >>> Compute().environment()
        {}
        """
        environment = {name: str(self.threads) for name in THREAD_VARIABLES
                       if self.threads is not None}
        if self.device == "cpu":
            environment.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                               KERAS_TORCH_DEVICE="cpu")
        elif self.device == "cuda":
            environment["KERAS_TORCH_DEVICE"] = "cuda"
        return environment


def loaded_backends() -> list[str]:
    """The backend modules imported already in this process (see :data:`BACKEND_MODULES`)."""
    return [name for name in BACKEND_MODULES if name in sys.modules]


def configure_environment(compute: Compute,
                          environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Write the environment of ``compute`` into ``environ`` (default ``os.environ``).

    Call it before Keras or a backend is imported: they read these variables once. Where
    one is imported already (Python code that imported Keras first), a warning says so:
    the processes started afterwards still follow the settings, this one may not.

    Returns
    -------
    dict
        The variables written.
    """
    environment = compute.environment()
    loaded = loaded_backends()
    if environment and loaded:
        log.warning("%s was imported before the thread and device settings were made: "
                    "processes started from now on follow them, this one may not",
                    " and ".join(loaded))
    (os.environ if environ is None else environ).update(environment)
    return environment
