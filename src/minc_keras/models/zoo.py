"""The model zoo: the workshop's networks, a dilated stack and U-Nets, by name.

Every network is fully convolutional, ``(N, H, W, 1) -> (N, H, W, num_classes)``, so one
model segments slices of any size (the U-Net: any multiple of 8); ``unet3d`` takes whole
volumes ``(N, X, Y, Z, 1)`` instead of slices. Names map to builders in one registry;
:func:`register_model` adds a user's own next to the built-ins. The workshop's stacks are
built in :mod:`minc_keras.models.conv_stack`, the U-Nets in :mod:`minc_keras.models.unet`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import keras

from minc_keras.core.errors import UsageError
from minc_keras.models.conv_stack import (
    DIL_FILTERS,
    WORKSHOP_MODELS,
    stack_builder,
    symmetric_dilations,
)
from minc_keras.models.unet import (
    UNET_BASE_FILTERS,
    UNET_DEPTH,
    build_unet,
    unet_multiple,
)

log = logging.getLogger(__name__)

#: ``builder(input_shape, num_classes, **options) -> keras.Model``
Builder = Callable[..., keras.Model]

@dataclass(frozen=True)
class _Entry:
    builder: Builder
    multiple: int
    description: str
    builtin: bool
    dims: int = 2


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    builder: Builder,
    *,
    required_multiple: int = 1,
    description: str = "",
    replace: bool = False,
) -> None:
    """Make ``build_model(name, ...)`` call ``builder``.

    Parameters
    ----------
    name : str
        Model name, as given to ``--model-type``.
    builder : callable
        ``builder(input_shape, num_classes, **options) -> keras.Model``; ``options``
        holds ``activation_hidden`` and ``activation_output`` and whichever of ``nK``,
        ``kernel_size``, ``drop_out`` and ``n_dil`` the caller gave.
    required_multiple : int
        Input height and width must be multiples of this (e.g. ``2 ** poolings``).
    description : str
        One line for ``minc-keras models``.
    replace : bool
        Allow replacing a built-in model (a user's own is always replaceable).

    Raises
    ------
    UsageError
        If the name is empty, the builder is not callable, or the name is a built-in
        model's and ``replace`` is false.
    """
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"a model name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise UsageError(
            f"the builder for model {name!r} must be callable, got {type(builder).__name__}"
        )
    if int(required_multiple) < 1:
        raise UsageError(f"required_multiple must be >= 1, got {required_multiple}")
    old = _REGISTRY.get(name)
    if old is not None and old.builtin and not replace:
        raise UsageError(f"{name!r} is a built-in model; choose another name or pass replace=True")
    _REGISTRY[name] = _Entry(builder, int(required_multiple), description, builtin=False)


def unregister_model(name: str) -> None:
    """Remove a model registered with :func:`register_model` (a no-op if absent)."""
    _REGISTRY.pop(name, None)


def available_models() -> tuple[str, ...]:
    """Names :func:`build_model` accepts: the built-ins, then the user's own."""
    return tuple(_REGISTRY)


def _entry(name: str) -> _Entry:
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise UsageError(f"unknown model {name!r}; available models: {', '.join(_REGISTRY)}")
    return entry


def required_multiple(name: str) -> int:
    """Input height and width of model ``name`` must be multiples of this.

    1 for the convolution stacks, 8 for the U-Net (three poolings).

    Raises
    ------
    UsageError
        If ``name`` is not a registered model.
    """
    return _entry(name).multiple


def spatial_dims(name: str) -> int:
    """2 for a network of slices, 3 for one of volumes (``unet3d``).

    >>> spatial_dims("unet"), spatial_dims("unet3d")
    (2, 3)
    """
    return _entry(name).dims


#: The built-in U-Nets, which take ``input_stride`` and ``refine_filters``.
_UNETS = ("unet", "unet3d")


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: Sequence[int | None] | None = None,
    activation_hidden: str = "relu",
    activation_output: str = "softmax",
    nK: Sequence[int] | None = None,
    kernel_size: int | None = None,
    drop_out: float | None = None,
    n_dil: Sequence[int] | int | None = None,
    input_stride: int | None = None,
    refine_filters: int | None = None,
) -> keras.Model:
    """Build the network registered as ``name``.

    Parameters
    ----------
    name : str
        One of :func:`available_models` (``model_0_0`` .. ``model_4_0``, ``custom``,
        ``dil``, ``unet`` and any registered with :func:`register_model`).
    num_classes : int
        Output channels: the number of classes, or 1 for a binary target with
        ``activation_output="sigmoid"``.
    input_shape : tuple of int or None, optional
        ``(H, W, C)`` of one slice (``(X, Y, Z, C)`` of a volume for ``unet3d``), ``None``
        for any size; default any size, one channel.
    activation_hidden, activation_output : str
        Keras activation names (``relu``, ``elu``, ``softmax``, ``sigmoid``, ...).
    nK : sequence of int, optional
        Filters per layer (``custom``, ``dil``); for ``unet`` one value is the base
        filters, several are the filters of each level (their number is the depth).
    kernel_size : int, optional
        Square kernel size (default 3).
    drop_out : float, optional
        Dropout rate in ``[0, 1)`` (default 0).
    n_dil : int or sequence of int, optional
        Dilation rate per layer, or one rate for all (``custom``, ``dil``).
    input_stride : int, optional
        ``unet`` only: fold each s x s block of pixels into channels so the top level
        runs at 1/s of the resolution (default 1, see :func:`build_unet`).
    refine_filters : int, optional
        ``unet`` only: filters of a full-resolution head that corrects the class scores
        from them and the input slice (default 0: none, see :func:`build_unet`).

    Returns
    -------
    keras.Model
        ``(N, H, W, C) -> (N, H, W, num_classes)``.

    Raises
    ------
    UsageError
        For an unknown name or an option outside its range.
    """
    entry = _entry(name)
    if input_shape is None:
        input_shape = (None,) * entry.dims + (1,)
    activations = {"activation_hidden": activation_hidden, "activation_output": activation_output}
    shape, options = _checked_options(
        num_classes, input_shape, activations, nK, kernel_size, drop_out, n_dil, entry.dims
    )
    check_input_stride(name, input_stride)
    check_refine_filters(name, refine_filters)
    if name in _UNETS:
        options["input_stride"] = input_stride or 1
        options["refine_filters"] = refine_filters or 0
    elif not entry.builtin:  # the defaults (stride 1, no head) are every model's
        if input_stride not in (None, 1):
            options["input_stride"] = input_stride
        if refine_filters:
            options["refine_filters"] = refine_filters
    if not entry.builtin:  # a user's builder sees only the options the caller gave
        options = {k: v for k, v in options.items() if v is not None}
    model = entry.builder(shape, num_classes, **options)
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"the builder of model {name!r} returned "
            f"{type(model).__name__}; it must return a keras.Model"
        )
    return model


def check_input_stride(name: str, input_stride: int | None) -> None:
    """Raise UsageError unless ``input_stride`` is a positive integer that model ``name`` takes.

    Built-in models other than the U-Nets take only the default (``None`` or 1).
    """
    entry = _entry(name)
    if input_stride is not None and (not _is_int(input_stride) or input_stride < 1):
        raise UsageError(f"input_stride must be a positive integer, got {input_stride!r}")
    if entry.builtin and name not in _UNETS and input_stride not in (None, 1):
        raise UsageError(f"the half-resolution stem (`input_stride`) applies to the U-Net "
                         f"(`model_type` unet), not to {name}")


def check_refine_filters(name: str, refine_filters: int | None) -> None:
    """Raise UsageError unless ``refine_filters`` is an integer >= 0 that model ``name`` takes.

    Built-in models other than the U-Nets take only the default (``None`` or 0).
    """
    entry = _entry(name)
    if refine_filters is not None and (not _is_int(refine_filters) or refine_filters < 0):
        raise UsageError(f"refine_filters must be an integer >= 0, got {refine_filters!r}")
    if entry.builtin and name not in _UNETS and refine_filters:
        raise UsageError(f"the refinement head (`refine_filters`) applies to the U-Net "
                         f"(`model_type` unet), not to {name}")


def _checked_options(num_classes, input_shape, activations, nK, kernel_size, drop_out, n_dil,
                     dims: int = 2):
    """Validate ``build_model``'s options; one UsageError sentence per mistake."""
    if not _is_int(num_classes) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = tuple(input_shape)
    if len(shape) != dims + 1 or not all(s is None or (_is_int(s) and s > 0) for s in shape):
        sides = "height, width" if dims == 2 else "x, y, z"
        raise UsageError(
            f"input_shape must be ({sides}, channels) with positive sizes or None, "
            f"got {input_shape!r}"
        )
    for label, value in activations.items():
        try:
            keras.activations.get(value)
        except (ValueError, TypeError):
            raise UsageError(
                f"{label} {value!r} is not a Keras activation; expected e.g. 'relu', 'elu', "
                f"'softmax' or 'sigmoid'"
            ) from None
    if num_classes == 1 and activations["activation_output"] == "softmax":
        raise UsageError(
            "activation_output 'softmax' over a single output channel always gives 1.0; "
            "use 'sigmoid' for a binary target"
        )
    nK = _positive_ints(nK, "nK must be a non-empty list of positive integers (filters per layer)")
    n_dil = _positive_ints(n_dil, "n_dil must be positive integer dilation rates")
    if kernel_size is not None and (not _is_int(kernel_size) or kernel_size < 1):
        raise UsageError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    if drop_out is not None and not (isinstance(drop_out, (int, float)) and 0 <= drop_out < 1):
        raise UsageError(f"drop_out must be a rate in [0, 1), got {drop_out!r}")
    options = {"nK": nK, "kernel_size": kernel_size, "drop_out": drop_out, "n_dil": n_dil}
    return shape, {**activations, **options}


def _positive_ints(values, expected: str) -> list[int] | None:
    if values is None:
        return None
    values = [values] if _is_int(values) else list(values)
    if not values or not all(_is_int(v) and v > 0 for v in values):
        raise UsageError(f"{expected}, got {values!r}")
    return values


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def describe_models(num_classes: int = 3) -> list[dict]:
    """Every registered model with its layers and parameter count.

    Parameters
    ----------
    num_classes : int
        Output channels the counts are computed for.

    Returns
    -------
    list of dict
        ``{"name", "layers", "parameters", "required_multiple"}`` per model.
    """
    activation = "sigmoid" if num_classes == 1 else "softmax"
    rows = []
    for name, entry in _REGISTRY.items():
        model = build_model(name, num_classes=num_classes, activation_output=activation)
        rows.append(
            {
                "name": name,
                "layers": entry.description or _summary(model),
                "parameters": int(model.count_params()),
                "required_multiple": entry.multiple,
            }
        )
        del model
    return rows


def _summary(model: keras.Model) -> str:
    kinds: dict[str, int] = {}
    for layer in model.layers:
        kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    kinds.pop("InputLayer", None)
    return ", ".join(f"{n} x {kind}" for kind, n in kinds.items())


def _register_builtins() -> None:
    for name, (filters, kernel, rate) in WORKSHOP_MODELS.items():
        text = f"{len(filters)} x Conv2D {kernel}x{kernel} [{','.join(map(str, filters))}]"
        text += (f" + Dropout {rate:g}" if rate else "") + ", 1x1 Conv2D"
        _REGISTRY[name] = _Entry(partial(stack_builder, name=name), 1, text, builtin=True)
    text = "Conv2D stack from --nK, --kernel-size, --drop-out, --n_dil (default model_0_0's)"
    _REGISTRY["custom"] = _Entry(partial(stack_builder, name="custom"), 1, text, builtin=True)
    dil = ",".join(map(str, symmetric_dilations(len(DIL_FILTERS))))
    text = f"{len(DIL_FILTERS)} x Conv2D 3x3 [32] dilations {dil} (45 px context), 1x1 Conv2D"
    _REGISTRY["dil"] = _Entry(partial(stack_builder, name="dil"), 1, text, builtin=True)
    levels = ",".join(str(UNET_BASE_FILTERS * 2**i) for i in range(UNET_DEPTH))
    multiple = unet_multiple(UNET_DEPTH)
    text = (
        f"U-Net, {UNET_DEPTH} levels [{levels}], 2 x (Conv-BN-ReLU) per level, "
        f"transposed-conv decoder; H, W multiples of {multiple}"
    )
    _REGISTRY["unet"] = _Entry(build_unet, multiple, text, builtin=True)
    text = (
        f"3-D U-Net of whole volumes, {UNET_DEPTH} levels [{levels}], 2 x (Conv3D-BN-ReLU) "
        f"per level; sides multiples of {multiple} (x the input stride)"
    )
    _REGISTRY["unet3d"] = _Entry(build_unet, multiple, text, builtin=True, dims=3)


_register_builtins()

#: The built-in models' names.
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
