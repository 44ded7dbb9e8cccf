"""minc-keras: deep learning for brain MRI segmentation, MINC and NIfTI in and out."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Keras reads its backend once, at first import. torch is the default: measured
# fastest for these 2-D networks on a CPU (see README, "Backend"). A user's own
# KERAS_BACKEND (jax, tensorflow) always wins.
os.environ.setdefault("KERAS_BACKEND", "torch")
