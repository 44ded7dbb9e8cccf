"""Networks, losses and metrics for slice segmentation.

Importing this package registers the custom losses, metrics and layers with Keras, so
``keras.saving.load_model`` restores a saved minc-keras model with no extra code.
"""

from __future__ import annotations

from minc_keras.models.conv_stack import WORKSHOP_MODELS, conv_stack, symmetric_dilations
from minc_keras.models.fused_batchnorm import FusedBatchNormalization
from minc_keras.models.losses import (
    LOSS_NAMES,
    DiceCELoss,
    DiceLoss,
    class_balance_weights,
    crossentropy,
    dice_ce_loss,
    dice_loss,
    get_loss,
)
from minc_keras.models.metrics import DiceScore, dice_per_class, make_metrics
from minc_keras.models.space_to_depth import DepthToSpace, SpaceToDepth
from minc_keras.models.unet import UNET_DEPTH, SpatialMultiple, build_unet, unet_multiple
from minc_keras.models.zoo import (
    MODEL_NAMES,
    available_models,
    build_model,
    check_input_stride,
    check_refine_filters,
    describe_models,
    register_model,
    required_multiple,
    spatial_dims,
    unregister_model,
)

__all__ = [
    "LOSS_NAMES",
    "MODEL_NAMES",
    "UNET_DEPTH",
    "WORKSHOP_MODELS",
    "DepthToSpace",
    "DiceCELoss",
    "DiceLoss",
    "DiceScore",
    "FusedBatchNormalization",
    "SpaceToDepth",
    "SpatialMultiple",
    "available_models",
    "build_model",
    "build_unet",
    "check_input_stride",
    "check_refine_filters",
    "class_balance_weights",
    "conv_stack",
    "crossentropy",
    "describe_models",
    "dice_ce_loss",
    "dice_loss",
    "dice_per_class",
    "get_loss",
    "make_metrics",
    "register_model",
    "required_multiple",
    "spatial_dims",
    "symmetric_dilations",
    "unet_multiple",
    "unregister_model",
]
