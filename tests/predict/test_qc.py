"""`predict --qc`: the outlier rule, a QC picture per scan, and one qc.html per folder."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from minc_keras.cli.main import main
from minc_keras.predict.qc import flag_outliers
from minc_keras.predict.qc_page import write_qc_page


def _scores(values):
    return pd.DataFrame({"scan": [f"s{i}" for i in range(len(values))], "qc_entropy": values})


def test_equal_scores_and_one_a_hair_above_flag_nothing():
    # the median absolute deviation is 0 here: without a floor, the hair is "infinitely" far
    assert not flag_outliers(_scores([0.2] * 9 + [0.2001])).any()


def test_a_real_outlier_is_flagged_and_only_it():
    flags = flag_outliers(_scores([0.20, 0.21, 0.19, 0.20, 0.22, 0.20, 0.61]))
    assert flags.tolist() == [False] * 6 + [True]
    assert not flag_outliers(_scores([0.2, 0.2, 0.9])).any()  # under five scans: no flag


@pytest.fixture(scope="module")
def qc_run(cohort_model, cohort_scans, tmp_path_factory):
    """Two ``predict --qc`` runs into one folder: three scans, then three more."""
    out = tmp_path_factory.mktemp("qc") / "out"
    scans = sorted(cohort_scans.glob("sub-4[0-5]_T1w.nii.gz"))
    for part in (scans[:3], scans[3:]):
        assert main(["predict", "--model", str(cohort_model), "-o", str(out), "--quiet", "--qc",
                     *map(str, part)]) == 0
    return out, scans


def test_each_scan_gets_a_qc_picture_and_one_page_holds_every_run(qc_run):
    out, scans = qc_run
    pictures = sorted(p.name for p in out.glob("*_desc-qc.png"))
    assert pictures == sorted(s.name.replace(".nii.gz", "_desc-qc.png") for s in scans)
    image = imread(out / pictures[0])
    assert image.shape[1] > 2 * image.shape[0]
    assert image[..., :3].std() > 0.05
    # the label contours are drawn in colour over the grey scan
    assert (np.ptp(image[..., :3], axis=-1) > 0.3).sum() > 50
    page = (out / "qc.html").read_text()
    assert page.count('<section class="scan') == len(scans)  # both runs on one page
    assert page.count("data:image/png;base64,") == len(scans)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing from outside


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")


def test_qc_page_puts_the_flagged_scan_first_and_renders(qc_run, tmp_path):
    out, _scans = qc_run
    folder = tmp_path / "page"
    shutil.copytree(out, folder)
    table = pd.read_csv(folder / "volumes.csv")
    outlier = table["scan"].iloc[2]
    table["qc_flag"] = table["scan"] == outlier
    table.to_csv(folder / "volumes.csv", index=False)
    page = write_qc_page(folder).read_text()
    first = re.search(r'<section class="scan[^"]*" data-scan="([^"]+)"', page)
    assert first.group(1) == outlier
    assert 'class="scan flagged"' in page
    assert page.count('class="scan flagged"') == 1

    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt install chromium) to render qc.html")
    shot = tmp_path / "qc.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,1600",
                    (folder / "qc.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # not a blank page
    # the red frame of the flagged scan's section is drawn near the top of the page
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.25) & (pixels[..., 2] < 0.25)
    assert red[:400].sum() > 100
