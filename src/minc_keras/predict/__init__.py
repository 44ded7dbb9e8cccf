"""Segment new scans with a trained model: ``minc-keras predict`` as a library.

:func:`predict_scans` (in :mod:`~minc_keras.predict.runner`) finds the scans
(:mod:`~minc_keras.predict.inputs`), segments each one
(:mod:`~minc_keras.predict.worker`) in this process, in fresh child processes
(:mod:`~minc_keras.predict.processes`) or on Dask (:mod:`~minc_keras.predict.dask_runner`),
and writes its outputs (:mod:`~minc_keras.predict.outputs`), the run's ``volumes.csv``
(:mod:`~minc_keras.predict.volumes`) and QC flags (:mod:`~minc_keras.predict.qc`);
with ``qc``, a picture per scan (:mod:`~minc_keras.predict.qc_figures`) and ``qc.html``
(:mod:`~minc_keras.predict.qc_page`); with ``bids``, BIDS derivatives
(:mod:`~minc_keras.predict.bids`).
Importing this package does not import Keras: only a process that runs a model does.
"""

from minc_keras.predict.runner import PredictReport, predict_scans

__all__ = ["PredictReport", "predict_scans"]
