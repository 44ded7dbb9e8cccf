"""Every path under a run folder (``--target``), named in one place.

::

    TARGET/data/            the preprocessed cache (manifest.json, *_img.npy, *_lab.npy)
    TARGET/model/           <name>.keras (+ <name>_<view>.keras), history[_<view>].json,
                            config.json, checkpoints/last[_<view>].keras, state[_<view>].json
    TARGET/report/          images.csv, metrics.csv, summary.json, report.html,
                            learning_curves[_<view>].png
    TARGET/predict/test/    labels and montages of the chosen test subjects

The first view of a run owns the plain names; every other view adds ``_<view>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The model file name when none is given.
DEFAULT_MODEL_NAME = "model.keras"


def model_file_name(name: str = DEFAULT_MODEL_NAME) -> str:
    """The ``.keras`` file name of ``name`` (a workshop ``.hdf5`` name becomes ``.keras``).

    >>> model_file_name("model.hdf5"), model_file_name("dir/m.keras"), model_file_name("m")
    ('model.keras', 'm.keras', 'm.keras')
    """
    base = Path(name).name
    return base if base.endswith(".keras") else Path(base).stem + ".keras"


def _suffix(view: str | None, views: list[str] | None) -> str:
    """``""`` for the first view (or no view), ``"_<view>"`` for the others."""
    if view is None or not views or view == views[0]:
        return ""
    return f"_{view}"


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of one run folder.

    Parameters
    ----------
    root : path-like
        The run folder (``--target``).

    Examples
    --------
    >>> layout = RunLayout("T")
    >>> layout.model_files("model.keras", ["axial", "coronal"])[1].as_posix()
    'T/model/model_coronal.keras'
    >>> layout.checkpoint("coronal", ["axial", "coronal"]).as_posix()
    'T/model/checkpoints/last_coronal.keras'
    """

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    # folders
    @property
    def data(self) -> Path:
        """The preprocessed cache."""
        return self.root / "data"

    @property
    def model_dir(self) -> Path:
        """Models, their histories and the training configuration."""
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        """The last checkpoint and progress record of each view."""
        return self.model_dir / "checkpoints"

    @property
    def report_dir(self) -> Path:
        """Tables, figures and the HTML report."""
        return self.root / "report"

    @property
    def predict_test(self) -> Path:
        """Labels and montages of the test subjects chosen with ``predict``."""
        return self.root / "predict" / "test"

    # model/
    def model_file(self, name: str = DEFAULT_MODEL_NAME) -> Path:
        """The first view's model file."""
        return self.model_dir / model_file_name(name)

    def model_files(self, name: str, views: list[str]) -> list[Path]:
        """The model file of each view: ``<name>.keras``, then ``<name>_<view>.keras``."""
        first = self.model_file(name)
        return [first] + [first.with_name(f"{first.stem}_{view}.keras") for view in views[1:]]

    @property
    def config(self) -> Path:
        """The training options the run was started with (``config.json``)."""
        return self.model_dir / "config.json"

    def history(self, view: str | None = None, views: list[str] | None = None) -> Path:
        """A view's learning curves, as numbers (``history[_<view>].json``)."""
        return self.model_dir / f"history{_suffix(view, views)}.json"

    def checkpoint(self, view: str | None = None, views: list[str] | None = None) -> Path:
        """A view's last checkpoint (weights and optimizer state)."""
        return self.checkpoints / f"last{_suffix(view, views)}.keras"

    def state(self, view: str | None = None, views: list[str] | None = None) -> Path:
        """A view's progress record (epochs done, best value, seconds spent)."""
        return self.checkpoints / f"state{_suffix(view, views)}.json"

    # report/
    @property
    def images_csv(self) -> Path:
        """The split: one row per scan."""
        return self.report_dir / "images.csv"

    @property
    def metrics_csv(self) -> Path:
        """Dice and volumes per test subject and class."""
        return self.report_dir / "metrics.csv"

    @property
    def summary(self) -> Path:
        """The run's headline numbers (``summary.json``)."""
        return self.report_dir / "summary.json"

    @property
    def report_html(self) -> Path:
        """The run on one page."""
        return self.report_dir / "report.html"

    def learning_curves(self, view: str | None = None, views: list[str] | None = None) -> Path:
        """A view's learning-curve figure."""
        return self.report_dir / f"learning_curves{_suffix(view, views)}.png"
