"""The command line: ``minc-keras`` (:func:`main`)."""

from minc_keras.cli.main import main

__all__ = ["main"]
