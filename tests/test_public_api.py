"""The package's top level: light to import, and every public name resolves."""

import subprocess
import sys

import pytest

import minc_keras


def test_importing_the_package_loads_no_keras_or_backend():
    code = ("import sys, minc_keras; heavy = [m for m in ('keras', 'torch', 'jax') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(set(minc_keras.__all__) - {"__version__"}))
def test_every_public_name_resolves(name):
    assert getattr(minc_keras, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        minc_keras.nope  # noqa: B018


def test_all_lists_exactly_the_lazy_names():
    assert set(minc_keras.__all__) == {"__version__", *minc_keras._API}
