"""Test settings shared by every module."""

import os

# Keras picks its backend at first import; tests may import keras before minc_keras.
os.environ.setdefault("KERAS_BACKEND", "torch")
