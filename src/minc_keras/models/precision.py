"""Numerical precision: which dtype policy to train in, and whether this machine computes it.

``--precision`` picks the Keras dtype policy a network is built with. Keras saves each
layer's policy with the model, so a model trained in bfloat16 or float16 would compute
in it wherever it is loaded; :func:`prediction_config` brings such a model back to
float32 on a machine that has no native arithmetic for it (bfloat16 on a CPU without
AVX-512 BF16 or AMX is about ten times slower than float32; float16 on any CPU).
"""

from __future__ import annotations

import logging

import keras

from minc_keras.core.errors import UsageError

log = logging.getLogger(__name__)

#: ``--precision`` names and the Keras dtype policies they set while building a network.
#: ``mixed`` (``--mixed-precision``) is float16 on a GPU and bfloat16 on a CPU that has it.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16",
              "mixed": None}


def accelerator() -> str | None:
    """The GPU Keras computes on, such as ``"cuda:0 (NVIDIA H100)"``; None on a CPU."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            return f"{gpus[0]} ({len(gpus)} GPU(s))"
    return None


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX) for torch.

    Without it torch emulates bfloat16 convolutions, about ten times slower than float32
    (measured on an AVX2 CPU). Other backends are assumed to have it.
    """
    if keras.backend.backend() != "torch":
        return True
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or newer torch without the probe
        return True


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy of a ``--precision`` name (``mixed`` looks at the hardware).

    ``mixed`` is float16 on a GPU, bfloat16 on a CPU that computes it natively, float32
    on any other CPU. An explicit ``bfloat16`` on a CPU without native bfloat16 is kept,
    with a warning that it will be slow.

    >>> dtype_policy("float32"), dtype_policy("float16")
    ('float32', 'mixed_float16')
    """
    if precision not in PRECISIONS:
        raise UsageError(f"`precision` {precision} is not known; choose one of "
                         f"{', '.join(PRECISIONS)}")
    if precision == "mixed":  # float16 with loss scaling on GPUs; bfloat16 needs none
        if accelerator():
            return "mixed_float16"
        if cpu_computes_bfloat16():
            return "mixed_bfloat16"
        log.info("`precision` mixed: this CPU has no native bfloat16, training in float32")
        return "float32"
    if precision == "bfloat16" and not accelerator() and not cpu_computes_bfloat16():
        log.warning("this CPU has no native bfloat16 (AVX-512 BF16 or AMX); "
                    "`precision` bfloat16 will be much slower than float32 here")
    return PRECISIONS[precision]


def computes_natively(policy: str) -> bool:
    """Whether this machine has native arithmetic for the dtype policy named ``policy``.

    >>> computes_natively("float32")
    True
    """
    if policy.endswith("bfloat16"):
        return accelerator() is not None or cpu_computes_bfloat16()
    if policy.endswith("float16"):
        return accelerator() is not None
    return True


def _policy_name(dtype) -> str | None:
    """The policy name of a layer config's ``dtype`` entry (a string or a serialised policy)."""
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
        return dtype["config"].get("name")
    return None


def prediction_config(config, *, where: str = "the model") -> tuple[object, bool]:
    """A saved model's config with its 16-bit layers set to float32 where they are slow.

    Parameters
    ----------
    config : dict or list
        The model's serialised config (``config.json`` of a ``.keras`` file).
    where : str
        How to name the model in the log message.

    Returns
    -------
    config : dict or list
        A copy in which every layer policy this machine does not compute natively
        (:func:`computes_natively`) is ``float32``; weights are float32 under every policy,
        so the saved weights load into it unchanged.
    changed : bool
        Whether any layer was changed.

    Examples
    --------
    >>> prediction_config({"dtype": "float32"})
    ({'dtype': 'float32'}, False)
    """
    slow: set[str] = set()

    def walk(node):
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            name = _policy_name(value) if key == "dtype" else None
            if name and name != "float32" and not computes_natively(name):
                slow.add(name)
                value = "float32"
            out[key] = walk(value)
        return out

    converted = walk(config)
    if slow:
        log.info("%s computes in %s, which this machine does not do natively; "
                 "predicting in float32", where, " and ".join(sorted(slow)))
    return converted, bool(slow)
