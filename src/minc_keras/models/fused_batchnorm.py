"""Batch normalisation that runs as one fused kernel under the torch backend.

Keras' :class:`~keras.layers.BatchNormalization` is written with ``keras.ops``: under
torch a training step computes the batch moments and the normalisation as half a dozen
separate elementwise passes over the feature map, forward and backward. In a profile of
the U-Net that arithmetic was a large share of a training step on a CPU
(``benchmarks/README.md``, "Training speed").
:class:`FusedBatchNormalization` computes the same thing with torch's own batch-norm
kernel when it can: channels-first 4-D features (the U-Net's layout under torch), no mask,
no renormalisation. Everywhere else it is Keras' layer unchanged. Weights, moving
statistics (biased batch variance, Keras' momentum convention) and outputs are those of
the Keras layer.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="minc_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """:class:`keras.layers.BatchNormalization` with torch's fused kernel where it applies.

    Takes the same arguments as the Keras layer.
    """

    def _fused(self, inputs, mask) -> bool:
        """Whether torch's kernel computes this call exactly like the Keras layer."""
        return (
            keras.config.backend() == "torch"
            and mask is None
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (1, -3)
        )

    def call(self, inputs, training=None, mask=None):
        """Normalise ``inputs``; update the moving statistics when training."""
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import torch

        # Like Keras: compute in float32 even for float16/bfloat16 features.
        x = ops.cast(inputs, "float32")
        gamma = ops.cast(self.gamma, "float32") if self.scale else None
        beta = ops.cast(self.beta, "float32") if self.center else None
        if training and self.trainable:
            out, mean, invstd = torch.ops.aten.native_batch_norm(
                x, gamma, beta, None, None, True, 0.0, self.epsilon
            )
            with torch.no_grad():
                # the kernel returns 1 / sqrt(var + eps) of the biased batch variance
                variance = invstd.detach().pow(-2) - self.epsilon
                self.moving_mean.assign(
                    self.moving_mean * self.momentum + mean.detach() * (1.0 - self.momentum)
                )
                self.moving_variance.assign(
                    self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
                )
        else:
            out = torch.nn.functional.batch_norm(
                x,
                ops.cast(self.moving_mean, "float32"),
                ops.cast(self.moving_variance, "float32"),
                gamma,
                beta,
                training=False,
                eps=self.epsilon,
            )
        return ops.cast(out, self.compute_dtype)
