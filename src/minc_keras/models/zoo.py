"""The model zoo: the workshop's networks, a dilated stack and U-Nets, by name.

Every network is fully convolutional, ``(N, H, W, 1) -> (N, H, W, num_classes)``, so one
model segments slices of any size (the U-Net: any multiple of 8); ``unet3d`` takes whole
volumes ``(N, X, Y, Z, 1)`` instead of slices. Names map to builders
in one registry; :func:`register_model` adds a user's own next to the built-ins.

The workshop's parameter counts (``num_classes=3``) are reproduced exactly:

=========  ==================================  ======  ========  ==========
name       filters per layer (``nK``)          kernel  dropout   parameters
=========  ==================================  ======  ========  ==========
model_0_0  16,16,32,32,64,64                   3x3     0           71,987
model_1_0  16,16,32,32,32,64,64,64,128         3x3     0          192,211
model_2_0  16,16,32,32,64,64                   5x5     0          199,219
model_3_0  8,8,8,16,16,16,32,32                3x3     0           21,043
model_4_0  16,16,32,32,32,64,64,64,128         5x5     0.25       532,435
=========  ==================================  ======  ========  ==========

The workshop slide for ``model_4_0`` lists model_2_0's six layers with dropout, which
gives 199,219 parameters (dropout has none), not the 532,435 it reports; the nine layers
of model_1_0 with 5x5 kernels give exactly 532,435, so that is the construction used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import keras

from minc_keras.core.errors import UsageError
from minc_keras.models.unet import (
    UNET_BASE_FILTERS,
    UNET_DEPTH,
    build_unet,
    channels_first_inside,
    unet_multiple,
)

log = logging.getLogger(__name__)

#: ``builder(input_shape, num_classes, **options) -> keras.Model``
Builder = Callable[..., keras.Model]

#: The workshop's fixed networks: (filters per layer, kernel size, dropout rate).
WORKSHOP_MODELS: dict[str, tuple[tuple[int, ...], int, float]] = {
    "model_0_0": ((16, 16, 32, 32, 64, 64), 3, 0.0),
    "model_1_0": ((16, 16, 32, 32, 32, 64, 64, 64, 128), 3, 0.0),
    "model_2_0": ((16, 16, 32, 32, 64, 64), 5, 0.0),
    "model_3_0": ((8, 8, 8, 16, 16, 16, 32, 32), 3, 0.0),
    "model_4_0": ((16, 16, 32, 32, 32, 64, 64, 64, 128), 5, 0.25),
}

#: Default filters of the dilated stack (seven 3x3 layers, dilations 1,2,4,8,4,2,1).
DIL_FILTERS = (32,) * 7

_TUNABLE = ("nK", "kernel_size", "drop_out", "n_dil")


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    multiple: int
    description: str
    builtin: bool
    dims: int = 2


_REGISTRY: dict[str, _Entry] = {}


def symmetric_dilations(n_layers: int) -> list[int]:
    """Dilation rates doubling to the middle layer and back: a wide, gap-free context.

    Parameters
    ----------
    n_layers : int
        Number of convolution layers.

    Returns
    -------
    list of int

    Examples
    --------
    >>> symmetric_dilations(7)
    [1, 2, 4, 8, 4, 2, 1]
    >>> symmetric_dilations(4)
    [1, 2, 2, 1]
    """
    rising = [2**i for i in range((n_layers + 1) // 2)]
    return rising + rising[: n_layers - len(rising)][::-1]


def conv_stack(
    input_shape: Sequence[int | None],
    num_classes: int,
    *,
    nK: Sequence[int],
    kernel_size: int = 3,
    drop_out: float = 0.0,
    dilations: Sequence[int] | None = None,
    activation_hidden: str = "relu",
    activation_output: str = "softmax",
    channels_first: bool | None = None,
    name: str = "custom",
) -> keras.Model:
    """The workshop's ``base_model``: Conv2D (+ Dropout) layers, then a 1x1 Conv2D.

    Parameters
    ----------
    input_shape : tuple of (int or None, int or None, int)
        ``(H, W, C)`` of one slice.
    num_classes : int
        Output channels.
    nK : sequence of int
        Filters of each hidden layer.
    kernel_size : int
        Square kernel size of the hidden layers.
    drop_out : float
        Dropout rate after each hidden layer; 0 adds no Dropout layer.
    dilations : sequence of int, optional
        Dilation rate of each hidden layer (default 1).
    activation_hidden, activation_output : str
        Keras activation names.
    channels_first : bool, optional
        Keep the features channels-first between the layers (default: under the torch
        backend, as the U-Net does, see
        :func:`~minc_keras.models.unet.channels_first_inside`). Same weights, same results.
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Maps ``(N, H, W, C)`` to ``(N, H, W, num_classes)``.
    """
    dilations = list(dilations) if dilations else [1] * len(nK)
    if channels_first is None:
        channels_first = channels_first_inside()
    layout = "channels_first" if channels_first else "channels_last"
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if channels_first:
        x = keras.layers.Permute((3, 1, 2), name="to_channels_first")(x)
    for i, (filters, rate) in enumerate(zip(nK, dilations, strict=True), start=1):
        x = keras.layers.Conv2D(
            int(filters),
            kernel_size,
            dilation_rate=int(rate),
            activation=activation_hidden,
            padding="same",
            data_format=layout,
            name=f"conv{i}",
        )(x)
        if drop_out:
            x = keras.layers.Dropout(drop_out, name=f"dropout{i}")(x)
    # softmax in float32 under a bfloat16 policy, over the last (channel) axis
    if not channels_first:
        outputs = keras.layers.Conv2D(num_classes, 1, activation=activation_output,
                                      padding="same", name="output", dtype="float32")(x)
        return keras.Model(inputs, outputs, name=name)
    x = keras.layers.Conv2D(num_classes, 1, padding="same", data_format=layout, name="output",
                            dtype="float32")(x)
    x = keras.layers.Permute((2, 3, 1), name="to_channels_last", dtype="float32")(x)
    outputs = keras.layers.Activation(activation_output, name="probabilities",
                                      dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _stack(input_shape, num_classes, *, name: str, **options) -> keras.Model:
    """Builder of the workshop models, ``custom`` and ``dil`` (all :func:`conv_stack`)."""
    layer_options = {k: options.pop(k) for k in ("nK", "kernel_size", "drop_out", "n_dil")}
    nK, kernel, rate, n_dil = layer_options.values()
    if name in WORKSHOP_MODELS:
        ignored = ", ".join(f"{k}={v}" for k, v in layer_options.items() if v is not None)
        if ignored:
            log.warning("%s has fixed layers; ignoring %s (use model 'custom')", name, ignored)
        nK, kernel, rate = WORKSHOP_MODELS[name]
        dilations = None
    else:
        nK = list(nK or (DIL_FILTERS if name == "dil" else WORKSHOP_MODELS["model_0_0"][0]))
        dilations = _per_layer(n_dil, len(nK))
        if name == "dil" and dilations is None:
            dilations = symmetric_dilations(len(nK))
    return conv_stack(
        input_shape,
        num_classes,
        nK=nK,
        kernel_size=kernel or 3,
        drop_out=rate or 0.0,
        dilations=dilations,
        name=name,
        **options,
    )


def _per_layer(rates: Sequence[int] | None, n_layers: int) -> list[int] | None:
    if not rates:
        return None
    if len(rates) == 1:
        return list(rates) * n_layers
    if len(rates) != n_layers:
        raise UsageError(
            f"n_dil has {len(rates)} dilation rates for {n_layers} layers; "
            f"give one rate per layer of nK, or a single rate for all"
        )
    return list(rates)


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
        raise UsageError(f"input_stride (--input-stride) applies to the U-Net "
                         f"(--model-type unet), not to {name}")


def check_refine_filters(name: str, refine_filters: int | None) -> None:
    """Raise UsageError unless ``refine_filters`` is an integer >= 0 that model ``name`` takes.

    Built-in models other than the U-Nets take only the default (``None`` or 0).
    """
    entry = _entry(name)
    if refine_filters is not None and (not _is_int(refine_filters) or refine_filters < 0):
        raise UsageError(f"refine_filters must be an integer >= 0, got {refine_filters!r}")
    if entry.builtin and name not in _UNETS and refine_filters:
        raise UsageError(f"refine_filters (--refine-filters) applies to the U-Net "
                         f"(--model-type unet), not to {name}")


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
        _REGISTRY[name] = _Entry(partial(_stack, name=name), 1, text, builtin=True)
    text = "Conv2D stack from --nK, --kernel-size, --drop-out, --n_dil (default model_0_0's)"
    _REGISTRY["custom"] = _Entry(partial(_stack, name="custom"), 1, text, builtin=True)
    dil = ",".join(map(str, symmetric_dilations(len(DIL_FILTERS))))
    text = f"{len(DIL_FILTERS)} x Conv2D 3x3 [32] dilations {dil} (45 px context), 1x1 Conv2D"
    _REGISTRY["dil"] = _Entry(partial(_stack, name="dil"), 1, text, builtin=True)
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
