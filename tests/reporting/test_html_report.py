"""``report/report.html``: written by every evaluation, self-contained, renders in a browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.reporting.html import write_html_report

SECTIONS = ("Summary", "Dice per test subject and class", "Predicted test subjects",
            "Learning curves", "Split", "Configuration")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run of the workshop's command (model_0_0, one epoch, every test subject)."""
    root = tmp_path_factory.mktemp("report")
    source = write_dataset(root / "source", n_subjects=6)
    target = root / "run"
    assert main(["--source", str(source), "--target", str(target), "--input-str", "T1w_anat",
                 "--label-str", "seg", "--epochs", "1", "--batch-size", "8", "--lr", "5e-3",
                 "--predict", "all", "--class-names", "background,shell,core",
                 "--quiet"]) == 0
    return target


def test_run_writes_a_self_contained_report(run):
    page = (run / "report" / "report.html").read_text()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert "71,987" in page  # parameters of model_0_0 for 3 classes
    assert "mean Dice shell" in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 2  # the learning curves and a montage per test subject
    assert all(src.startswith("data:image/png;base64,") for src in images)
    # nothing is fetched: no links to style sheets or scripts, no URLs in attributes
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<link" not in page
    assert "<script src" not in page


def test_evaluate_writes_the_report_again(run, capsys):
    page = run / "report" / "report.html"
    page.unlink()
    assert main(["evaluate", "--target", str(run), "--quiet"]) == 0
    assert f"report: {page}" in capsys.readouterr().out
    assert "<h2>Summary</h2>" in page.read_text()
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["parameters"] == 71987
    assert 0 <= summary["test_accuracy"] <= 1
    assert summary["training_seconds"] > 0
    assert summary["inference_seconds_per_volume"] > 0


def test_the_reports_numbers_are_those_of_summary_json(run):
    """The headline cards show summary.json's values (and the run's epochs), by value."""
    page = (run / "report" / "report.html").read_text()
    cards = {html.unescape(label): html.unescape(value) for value, label in re.findall(
        r"<div class='card[^']*'><b>(.*?)</b><span>(.*?)</span></div>", page)}
    summary = json.loads((run / "report" / "summary.json").read_text())
    history = json.loads((run / "model" / "history.json").read_text())
    expected = {"model": summary["model"], "parameters": f"{summary['parameters']:,}",
                "epochs trained": str(len(history["loss"])),
                f"test {summary['metric_name']}": f"{summary['test_accuracy']:.4f}",
                "test loss": f"{summary['test_loss']:.4f}",
                "training time": f"{summary['training_seconds'] / 60:.1f} min",
                "inference per volume": f"{summary['inference_seconds_per_volume']:.2f} s",
                **{f"mean Dice {name}": f"{dice:.3f}"
                   for name, dice in summary["mean_dice"].items()}}
    assert cards == expected
    assert set(summary["mean_dice"]) == {"shell", "core"}
    # the Dice table's last row, the mean over the test subjects, is the same mean Dice
    metrics = pd.read_csv(run / "report" / "metrics.csv")
    mean_row = re.search(r"<tr class='total'>(.*?)</tr>", page).group(1)
    shown = re.findall(r'<td class="num">([\d.]+)</td>', mean_row)
    assert shown == [f"{metrics.loc[metrics['class_name'] == name, 'dice'].mean():.3f}"
                     for name in ("shell", "core")]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_chromium_with_every_image(run):
    page = run / "report" / "report.html"
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                             "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    # the page's own script counts, once loaded, the images that decoded
    loaded = re.search(r'data-images-loaded="(\d+)"', result.stdout)
    total = re.search(r'data-images-total="(\d+)"', result.stdout)
    assert loaded, result.stderr[-2000:]
    assert total, result.stderr[-2000:]
    assert int(total.group(1)) >= 2
    assert loaded.group(1) == total.group(1)


def test_text_from_the_run_is_escaped(tmp_path):
    """Names in the configuration and the metrics cannot inject markup into the page."""
    evil = "<script>alert(1)</script>"
    (tmp_path / "model").mkdir()
    (tmp_path / "report").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(
        {"model_type": evil, "class_names": ["background", evil]}))
    pd.DataFrame([{"subject": f"sub-{evil}", "session": "ses-01", "class": 1,
                   "class_name": evil, "dice": 0.5}]).to_csv(
        tmp_path / "report" / "metrics.csv", index=False)
    page = write_html_report(tmp_path).read_text()
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own self-check


def test_a_folder_with_no_run_still_gets_a_page(tmp_path):
    page = write_html_report(tmp_path).read_text()
    assert "No test subjects were evaluated." in page
    assert "No split recorded." in page


def test_class_offsets_are_shown_with_their_factors(tmp_path):
    (tmp_path / "report").mkdir()
    calibration = {"offsets": {"CSF": -1.7, "GM": 0.0, "WM": -0.1}, "scans": 1,
                   "atrophied_copies": 1, "atrophy_voxels": 3.0, "dice_before": 0.893,
                   "dice_after": 0.903}
    (tmp_path / "report" / "summary.json").write_text(json.dumps({"calibration": calibration}))
    page = write_html_report(tmp_path).read_text()
    assert "<h3>Class offsets (--calibrate)</h3>" in page
    assert "1 validation scan and 1 atrophied copies of them" not in page
    assert "fitted after training on 1 validation scan and 1 atrophied cop" in page
    assert "enlarged by 3 voxels" in page
    assert "mean Dice 0.893 without, 0.903 with" in page
    factors = re.findall(r'<td>(\w+)</td><td class="num">(-?[\d.]+)</td>'
                         r'<td class="num">([\d.]+)</td>', page)
    assert factors == [("CSF", "-1.70", "0.18"), ("GM", "0.00", "1.00"), ("WM", "-0.10", "0.90")]
    # a summary.json edited by hand into another shape is skipped, not a crash
    calibration["offsets"] = [0.0, -1.7]
    (tmp_path / "report" / "summary.json").write_text(json.dumps({"calibration": calibration}))
    assert "Class offsets" not in write_html_report(tmp_path).read_text()
    (tmp_path / "report" / "summary.json").write_text(json.dumps({"calibration": [1, 2]}))
    assert "Class offsets" not in write_html_report(tmp_path).read_text()
