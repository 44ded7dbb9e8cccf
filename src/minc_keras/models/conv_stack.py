"""The workshop's networks: stacks of same-size convolutions, and the dilated ``dil``.

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
from collections.abc import Sequence

import keras

from minc_keras.core.errors import UsageError
from minc_keras.models.unet import channels_first_inside

log = logging.getLogger(__name__)

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


def stack_builder(input_shape, num_classes, *, name: str, **options) -> keras.Model:
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
