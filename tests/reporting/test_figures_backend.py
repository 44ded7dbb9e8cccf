"""Drawing figures leaves the user's matplotlib backend alone (a notebook's stays inline)."""

import subprocess
import sys

SCRIPT = """
import matplotlib
matplotlib.use("svg")
import numpy as np
from minc_keras.reporting.figures import plot_history, save_montage
from minc_keras.reporting import compare
image = np.random.default_rng(0).random((12, 10, 8)).astype(np.float32)
labels = (image > 0.5).astype(np.uint8)
save_montage(image, labels, labels, r"{out}/m.png", num_classes=2, class_names=["bg", "x"])
plot_history({{"loss": [1.0, 0.5], "val_loss": [1.1, 0.6]}}, r"{out}/h.png")
print(matplotlib.get_backend())
"""


def test_figures_do_not_switch_the_backend(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(out=tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().lower() == "svg"
    assert (tmp_path / "m.png").stat().st_size > 0
    assert (tmp_path / "h.png").stat().st_size > 0
