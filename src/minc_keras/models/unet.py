"""A U-Net for slices (2-D) or volumes (3-D), written with ``keras`` and ``keras.ops`` only.

The encoder halves the slice ``depth - 1`` times, so the network's input height and
width (and depth, for a volume) must be multiples of ``2 ** (depth - 1)`` (8 for the
default depth of 4).
:class:`SpatialMultiple`, the first layer of the network, checks this and raises one
clear sentence instead of a shape mismatch deep inside a ``Concatenate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from minc_keras.core.errors import UsageError
from minc_keras.models.fused_batchnorm import FusedBatchNormalization
from minc_keras.models.space_to_depth import DepthToSpace, SpaceToDepth

#: Resolution levels of the U-Net (3 poolings).
UNET_DEPTH = 4

#: Filters of the first level; each lower level doubles them.
UNET_BASE_FILTERS = 16

_UPSAMPLING = ("transpose", "bilinear")


def unet_multiple(depth: int = UNET_DEPTH, input_stride: int = 1) -> int:
    """Input height and width must be multiples of this for a U-Net of ``depth`` levels.

    Parameters
    ----------
    depth : int
        Resolution levels (``depth - 1`` poolings by 2).
    input_stride : int
        Pixels folded into channels along each side before the first level.

    Returns
    -------
    int
        ``input_stride * 2 ** (depth - 1)``.

    Examples
    --------
    >>> unet_multiple(4), unet_multiple(4, input_stride=2)
    (8, 16)
    """
    return input_stride * 2 ** (depth - 1)


@keras.saving.register_keras_serializable(package="minc_keras")
class SpatialMultiple(keras.layers.Layer):
    """Identity layer that rejects slices whose height or width is not a multiple.

    Parameters
    ----------
    multiple : int
        Required divisor of the height and width of ``(N, H, W, C)`` inputs (and of the
        three sides of ``(N, X, Y, Z, C)`` volumes).
    """

    def __init__(self, multiple: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def check_shape(self, shape: Sequence) -> None:
        """Raise UsageError if a known spatial size of ``(N, ..., C)`` is not a multiple."""
        spatial = list(shape[1:-1])
        if any(isinstance(s, int) and s % self.multiple for s in spatial):
            kind, unit, sides = (("slices", "pixels", "height and width") if len(spatial) == 2
                                 else ("volumes", "voxels", "all three sides"))
            raise UsageError(
                f"U-Net input {kind} are {' x '.join(map(str, spatial))} {unit}, but {sides} "
                f"must be multiples of {self.multiple}; pad them to a multiple of "
                f"{self.multiple} (the `pad` option does this)"
            )

    def call(self, inputs):
        """Return ``inputs`` unchanged after checking their spatial size."""
        self.check_shape(tuple(inputs.shape))
        return inputs

    def compute_output_shape(self, input_shape):
        """Same shape as the input; a static size that is not a multiple is rejected."""
        self.check_shape(tuple(input_shape))
        return input_shape

    def get_config(self) -> dict:
        """Configuration for serialisation."""
        return {**super().get_config(), "multiple": self.multiple}


def channels_first_inside() -> bool:
    """Whether new U-Nets keep their features channels-first between input and output.

    Under the torch backend, yes: Keras' torch convolutions take channels-first tensors and
    copy channels-last ones to that layout and back around every convolution, which cost
    as much time as the convolutions themselves in a profile of the U-Net. The network's
    input and output stay channels-last either way (one transpose each).
    """
    return keras.config.backend() == "torch"


def _layers(dims: int) -> dict:
    """The Keras layer classes of a ``dims``-dimensional U-Net (2 or 3)."""
    if dims == 2:
        return {"conv": keras.layers.Conv2D, "pool": keras.layers.MaxPooling2D,
                "up": keras.layers.Conv2DTranspose}
    return {"conv": keras.layers.Conv3D, "pool": keras.layers.MaxPooling3D,
            "up": keras.layers.Conv3DTranspose}


def _conv_block(x, filters: int, kernel_size: int, activation, name: str, data_format: str):
    """Two convolution (no bias) -> BatchNormalization -> activation units."""
    conv = _layers(len(x.shape) - 2)["conv"]
    for i in (1, 2):
        x = conv(
            filters, kernel_size, padding="same", use_bias=False, data_format=data_format,
            name=f"{name}_conv{i}"
        )(x)
        # momentum 0.9: the running statistics must settle within a few CPU-minutes of training
        x = FusedBatchNormalization(axis=1 if data_format == "channels_first" else -1,
                                    momentum=0.9, name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def _refinement(scores, image, filters: int, activation, data_format: str):
    """``scores`` plus a correction computed at full resolution from them and ``image``."""
    axis = 1 if data_format == "channels_first" else -1
    conv = _layers(len(scores.shape) - 2)["conv"]
    x = keras.layers.Concatenate(axis=axis, name="refine_inputs")([scores, image])
    x = conv(filters, 3, padding="same", use_bias=False, data_format=data_format,
             name="refine_conv")(x)
    x = FusedBatchNormalization(axis=axis, momentum=0.9, name="refine_bn")(x)
    x = keras.layers.Activation(activation, name="refine_act")(x)
    # zero at the start: training begins from the U-Net's own scores
    correction = conv(scores.shape[axis], 1, data_format=data_format,
                      kernel_initializer="zeros", name="refine_output", dtype="float32")(x)
    return keras.layers.Add(name="refined", dtype="float32")([scores, correction])


def build_unet(
    input_shape: Sequence[int | None],
    num_classes: int,
    *,
    activation_hidden: str = "relu",
    activation_output: str = "softmax",
    nK: Sequence[int] | None = None,
    kernel_size: int | None = None,
    drop_out: float | None = None,
    depth: int = UNET_DEPTH,
    upsampling: str = "transpose",
    input_stride: int = 1,
    refine_filters: int = 0,
    channels_first: bool | None = None,
    name: str = "unet",
    **ignored,
) -> keras.Model:
    """A U-Net: encoder-decoder with skip connections, for slices or volumes.

    The input shape decides: ``(H, W, C)`` builds a 2-D network of slices, ``(X, Y, Z, C)``
    a 3-D one of volumes (Conv3D, 3-D pooling and transposed convolutions, 2x2x2 blocks
    folded into channels with ``input_stride`` 2).

    Each level holds two Conv-BatchNorm-activation units; the encoder max-pools by 2
    between levels and the decoder upsamples by 2 (a 2x2 stride-2 transposed
    convolution, or bilinear upsampling followed by a 3x3 convolution), concatenates the
    encoder's features of the same level and applies two more units. A 1x1 convolution
    gives the class probabilities.

    With ``input_stride`` s > 1 the network folds each s x s block of pixels into
    channels first (:class:`~minc_keras.models.space_to_depth.SpaceToDepth`), so its top
    level runs at 1/s of the resolution, and the output convolution predicts the classes
    of every pixel of the block (:class:`~minc_keras.models.space_to_depth.DepthToSpace`).
    With s = 2 and twice the filters a training step on a CPU takes about two thirds of
    the time of the full-resolution U-Net (``benchmarks/README.md``).

    With ``refine_filters`` k > 0 a small head at full resolution corrects the class
    scores: the scores and the input slice pass through one 3x3 Conv-BatchNorm-activation
    unit of k filters, whose 1x1 projection (zero at the start of training) is added to
    the scores. It sees the image's own edges, which the half-resolution levels blur.

    Parameters
    ----------
    input_shape : tuple of int or None
        ``(H, W, C)`` of one slice or ``(X, Y, Z, C)`` of one volume; ``(None, None, 1)``
        accepts slices of any size that is a multiple of :func:`unet_multiple`.
    num_classes : int
        Output channels.
    activation_hidden, activation_output : str
        Keras activation names.
    nK : sequence of int, optional
        One value: the first level's filters (default 16), doubled at each lower level.
        Several values: the filters of each level, top to bottom; their number is then
        the depth (``depth`` is ignored).
    kernel_size : int, optional
        Kernel size of the level convolutions (default 3).
    drop_out : float, optional
        Dropout rate at the bottleneck (default 0: no dropout layer).
    depth : int
        Resolution levels, at least 2 (default 4: 3 poolings).
    upsampling : {"transpose", "bilinear"}
        Decoder upsampling (``bilinear``: slices only).
    input_stride : int
        1 (default): the top level sees the slice at full resolution; 2 or more: at
        1/``input_stride`` of it, as described above.
    refine_filters : int
        Filters of the full-resolution head described above (default 0: none).
    channels_first : bool, optional
        Keep the features channels-first inside the network (default: under the torch
        backend, see :func:`channels_first_inside`). Same weights, same results.
    name : str
        Model name.
    **ignored
        Options that do not apply to a U-Net (``n_dil``); accepted and unused.

    Returns
    -------
    keras.Model
        Maps ``(N, H, W, C)`` to ``(N, H, W, num_classes)`` (volumes likewise).
    """
    dims = len(input_shape) - 1
    filters_per_level, stride = _checked_options(input_shape, nK, depth, upsampling,
                                                 input_stride, refine_filters)
    kernel = int(kernel_size) if kernel_size else 3
    check = SpatialMultiple(unet_multiple(len(filters_per_level), stride), name="check_size")
    check.check_shape((None, *input_shape))  # a fixed size is rejected now, in one sentence
    if channels_first is None:
        channels_first = channels_first_inside()
    layout = "channels_first" if channels_first else "channels_last"
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = check(inputs)
    if channels_first:
        x = keras.layers.Permute((dims + 1, *range(1, dims + 1)), name="to_channels_first")(x)
    image = x  # the slice at full resolution, for the refinement head
    if stride > 1:
        x = SpaceToDepth(stride, data_format=layout, name="space_to_depth")(x)
    x = _encoder_decoder(x, filters_per_level, kernel, activation_hidden, layout,
                         upsampling=upsampling, drop_out=drop_out)
    # the output in float32 (softmax under bfloat16), over the last (channel) axis
    if not channels_first and stride == 1 and not refine_filters:
        outputs = _layers(dims)["conv"](num_classes, 1, activation=activation_output,
                                        name="output", dtype="float32")(x)
        return keras.Model(inputs, outputs, name=name)
    x = _layers(dims)["conv"](num_classes * stride**dims, 1, data_format=layout, name="output",
                              dtype="float32")(x)
    if stride > 1:  # each pixel of a block gets its own class scores
        x = DepthToSpace(stride, data_format=layout, name="depth_to_space", dtype="float32")(x)
    if refine_filters:
        x = _refinement(x, image, int(refine_filters), activation_hidden, layout)
    if channels_first:
        x = keras.layers.Permute((*range(2, dims + 2), 1), name="to_channels_last",
                                 dtype="float32")(x)
    outputs = keras.layers.Activation(activation_output, name="probabilities",
                                      dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _checked_options(input_shape, nK, depth: int, upsampling: str, input_stride,
                     refine_filters) -> tuple[list[int], int]:
    """The filters of each level and the input stride, once the options are checked."""
    dims = len(input_shape) - 1
    if dims not in (2, 3):
        raise UsageError(f"a U-Net takes slices (H, W, C) or volumes (X, Y, Z, C), "
                         f"got input_shape {tuple(input_shape)!r}")
    if upsampling == "bilinear" and dims == 3:
        raise UsageError("bilinear upsampling is for slices; a 3-D U-Net uses 'transpose'")
    if depth < 2:
        raise UsageError(f"a U-Net needs depth >= 2 resolution levels, got depth={depth}")
    if upsampling not in _UPSAMPLING:
        raise UsageError(f"upsampling must be one of {_UPSAMPLING}, got {upsampling!r}")
    if nK and len(nK) > 1:
        filters_per_level = [int(k) for k in nK]
    else:
        base = int(nK[0]) if nK else UNET_BASE_FILTERS
        filters_per_level = [base * 2**level for level in range(depth)]
    if int(input_stride) != input_stride or input_stride < 1:
        raise UsageError(f"input_stride must be a positive integer, got {input_stride!r}")
    if int(refine_filters) != refine_filters or refine_filters < 0:
        raise UsageError(f"refine_filters must be an integer >= 0, got {refine_filters!r}")
    return filters_per_level, int(input_stride)


def _encoder_decoder(x, filters_per_level: list[int], kernel: int, activation, layout: str, *,
                     upsampling: str, drop_out: float | None):
    """The U-Net's levels: encoder, bottleneck, decoder with skip connections."""
    layer = _layers(len(x.shape) - 2)
    depth = len(filters_per_level)
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters_per_level[level], kernel, activation, f"enc{level}", layout)
        if level < depth - 1:
            skips.append(x)
            x = layer["pool"](2, data_format=layout, name=f"pool{level}")(x)
    if drop_out:
        x = keras.layers.Dropout(drop_out, name="bottleneck_dropout")(x)
    for level in reversed(range(depth - 1)):
        filters = filters_per_level[level]
        if upsampling == "transpose":
            x = layer["up"](
                filters, 2, strides=2, padding="same", data_format=layout, name=f"up{level}"
            )(x)
        else:
            x = keras.layers.UpSampling2D(2, interpolation="bilinear", data_format=layout,
                                          name=f"up{level}")(x)
            x = keras.layers.Conv2D(filters, 3, padding="same", data_format=layout,
                                    name=f"up{level}_conv")(x)
        x = keras.layers.Concatenate(axis=1 if layout == "channels_first" else -1,
                                     name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, filters, kernel, activation, f"dec{level}", layout)
    return x
