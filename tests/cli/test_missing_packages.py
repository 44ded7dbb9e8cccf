"""A missing backend or extra is one sentence naming what to install, exit 2, not a 'bug'."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
sys.modules[{module!r}] = None  # as if it were not installed
from minc_keras.cli.main import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(("module", "argv", "needle"), [
    ("torch", ["models", "--num-classes", "3"], "install PyTorch"),
    ("nilearn", ["demo-data", "{tmp}/demo"], "minc-keras[demo]"),
])
def test_a_missing_package_is_named_with_what_to_install(tmp_path, module, argv, needle):
    argv = [a.format(tmp=tmp_path) for a in argv]
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(module=module, argv=argv)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={"KERAS_BACKEND": "torch", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "bug" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
