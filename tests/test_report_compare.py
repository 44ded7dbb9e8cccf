"""`report/report.html` of every run, and `minc-keras compare` of several runs."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from synthetic import write_dataset

from minc_keras.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs of different models on the same data."""
    root = tmp_path_factory.mktemp("runs")
    source = write_dataset(root / "source", n_subjects=6)
    targets = []
    for model in ("model_0_0", "custom"):
        target = root / model
        assert main(["--source", str(source), "--target", str(target), "--input-str",
                     "T1w_anat", "--label-str", "seg", "--epochs", "1", "--batch-size", "8",
                     "--lr", "5e-3", "--model-type", model, "--nK", "8,8", "--predict", "all",
                     "--class-names", "background,shell,core", "--quiet"]) == 0
        targets.append(target)
    return targets


def test_report_is_self_contained_and_complete(runs):
    page = (runs[0] / "report" / "report.html").read_text()
    for heading in ("Summary", "Dice per test subject and class", "Predicted test subjects",
                    "Learning curves", "Split", "Configuration"):
        assert f"<h2>{heading}</h2>" in page
    assert "71,987" in page  # the parameter count of model_0_0 for 3 classes
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 2  # learning curves and a montage
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="https?://', page)  # nothing from the network


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_a_browser_with_every_image(runs):
    page = runs[0] / "report" / "report.html"
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                             "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    loaded = re.search(r'data-images-loaded="(\d+)"', result.stdout)
    total = re.search(r'data-images-total="(\d+)"', result.stdout)
    assert loaded, result.stderr[-2000:]
    assert total, result.stderr[-2000:]
    assert int(total.group(1)) >= 2
    assert loaded.group(1) == total.group(1)  # every image decoded


def test_compare_prints_writes_and_draws(runs, tmp_path, capsys):
    assert main(["compare", *map(str, runs), "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "model_0_0" in out
    assert "custom" in out
    table = pd.read_csv(tmp_path / "compare.csv")
    assert list(table["model"]) == ["model_0_0", "custom"]
    assert table.loc[0, "parameters"] == 71987
    for column in ("test accuracy", "Dice shell", "Dice core", "training min",
                   "inference s/volume"):
        assert table[column].between(0, 1e4).all(), column
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_of_a_folder_without_a_run_is_a_clear_error(runs, tmp_path, capsys):
    assert main(["compare", str(runs[0]), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} holds no evaluated run" in err
    assert "Traceback" not in err
