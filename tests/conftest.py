"""Test settings shared by every module."""

import os

# Keras picks its backend at first import; tests may import keras before minc_keras.
os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest


@pytest.fixture(scope="session")
def cohort_model(tmp_path_factory):
    """A briefly trained workshop model, shared by the cohort-inference tests."""
    from synthetic import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("cohort-model"), epochs=2)


@pytest.fixture(scope="session")
def cohort_scans(tmp_path_factory):
    """Six synthetic scans and one file that is not a scan (``sub-99_T1w.nii.gz``)."""
    from synthetic import write_scan_folder

    return write_scan_folder(tmp_path_factory.mktemp("cohort"), range(40, 46),
                             "sub-99_T1w.nii.gz")
