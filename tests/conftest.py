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
    """Seven synthetic scans and one file that is not a scan (``sub-99_T1w.nii.gz``).

    The seventh, ``site-b/sub-40_T1w.nii.gz``, has the name of another: the outputs of the
    two are told apart by their folders (``predict.output_names``).
    """
    from synthetic import XYZ_AFFINE, make_subject, write_scan_folder

    from minc_keras.io import Volume, write_volume

    folder = write_scan_folder(tmp_path_factory.mktemp("cohort"), range(40, 46),
                               "sub-99_T1w.nii.gz")
    write_volume(Volume(make_subject(46)[0], XYZ_AFFINE.copy()),
                 folder / "site-b" / "sub-40_T1w.nii.gz")
    return folder


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves ``os.environ`` as it found it.

    Dask sets ``OMP_NUM_THREADS=1`` and the like in the process that starts a cluster; a
    later test's training subprocess would inherit one thread and compute other sums than
    this process's two (the resume test compares the two bit for bit).
    """
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)
