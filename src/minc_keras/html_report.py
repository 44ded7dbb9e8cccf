"""``TARGET/report/report.html``: one self-contained page per run, for people to look at.

The page shows the run's configuration, the split, the learning curves, Dice per subject
and class, montages of the predicted test subjects, the parameter count and timings. Images
are embedded as data URIs, so the file can be mailed or archived alone and opened with no
network.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from minc_keras import __version__
from minc_keras.atomic import write_text_atomic

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2330; background: #f4f6f9; }
header { background: #1d3557; color: white; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; } header p { margin: 4px 0 0; opacity: 0.8; }
main { padding: 8px 32px 32px; max-width: 1200px; }
section { background: white; border-radius: 8px; padding: 12px 20px; margin: 16px 0;
          box-shadow: 0 1px 3px rgba(0, 0, 0, 0.08); }
h2 { font-size: 17px; color: #1d3557; border-bottom: 1px solid #e3e7ee; padding-bottom: 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #eef3fa; border-radius: 6px; padding: 10px 16px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card span { font-size: 12px; color: #56607a; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e8ebf0; text-align: left; }
th { background: #f0f3f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #e3e7ee; border-radius: 4px; margin: 6px 0; }
figure { margin: 0 0 12px; } figcaption { font-size: 12px; color: #56607a; }
.muted { color: #8a93a6; }
"""

# Once everything has loaded, the page records how many images decoded (a self-check
# that tests read back from a headless browser).
SELF_CHECK = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  document.body.dataset.imagesLoaded = images.filter(function (i) {
    return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesTotal = images.length;
});
"""


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            if isinstance(value, float):
                text = "-" if math.isnan(value) else f"{value:.{digits}f}"
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _cards(summary: dict, config: dict) -> str:
    def card(value: str, label: str) -> str:
        return (f"<div class='card'><b>{html.escape(value)}</b>"
                f"<span>{html.escape(label)}</span></div>")

    minutes = summary.get("training_seconds")
    seconds = summary.get("seconds_per_volume")
    accuracy = summary.get("test_metric")
    cards = [card(str(config.get("model_type", "?")), "model"),
             card(f"{summary['parameters']:,}" if "parameters" in summary else "-", "parameters"),
             card(f"{accuracy:.4f}" if accuracy is not None else "-",
                  summary.get("metric_name", "test accuracy")),
             card(f"{minutes / 60:.1f} min" if minutes is not None else "-", "training"),
             card(f"{seconds:.1f} s" if seconds is not None else "-", "inference per volume")]
    cards += [card(f"{dice:.3f}", f"mean Dice {name}")
              for name, dice in summary.get("mean_dice", {}).items()]
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _split(target: Path) -> str:
    path = target / "report" / "images.csv"
    if not path.is_file():
        return "<p class='muted'>no split recorded</p>"
    split = pd.read_csv(path, dtype=str).fillna("")
    rows = [{"split": category, "subjects": part["subject"].nunique(), "scans": len(part),
             "names": ", ".join(sorted(part["subject"].unique()))}
            for category, part in split.groupby("category", sort=False)]
    return _table(pd.DataFrame(rows))


def _dice(target: Path) -> str:
    path = target / "report" / "metrics.csv"
    try:
        metrics = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        metrics = pd.DataFrame()
    if metrics.empty:
        return "<p class='muted'>no test subjects were evaluated</p>"
    wide = metrics.pivot_table(index="subject", columns="class_name", values="dice",
                               sort=False).reset_index()
    wide.columns.name = None
    mean = {"subject": "mean", **{c: wide[c].mean() for c in wide.columns[1:]}}
    return _table(pd.concat([wide, pd.DataFrame([mean])], ignore_index=True))


def write_html_report(target: str | Path) -> Path:
    """Write ``TARGET/report/report.html`` from what the run left in ``TARGET``.

    Parameters
    ----------
    target : path-like
        A run folder (after ``evaluate``; montages appear once test subjects were
        predicted).

    Returns
    -------
    Path
        The page written.
    """
    target = Path(target)
    report = target / "report"
    config = _read_json(target / "model" / "config.json")
    summary = _read_json(report / "summary.json")
    curves = sorted(report.glob("learning_curves*.png"))
    montages = sorted((target / "predict" / "test").glob("*_montage.png"))
    settings = pd.DataFrame([{"option": k, "value": json.dumps(v) if isinstance(v, list) else v}
                             for k, v in config.items() if v is not None])
    parts = [
        "<section><h2>Summary</h2>", _cards(summary, config), "</section>",
        "<section><h2>Dice per test subject and class</h2>", _dice(target), "</section>",
        "<section><h2>Predicted test subjects</h2>",
        "".join(_image(p, p.stem.removesuffix("_montage") +
                       ": input | reference | prediction") for p in montages)
        or "<p class='muted'>none predicted (use --predict all)</p>", "</section>",
        "<section><h2>Learning curves</h2>",
        "".join(_image(p, p.stem.replace("_", " ")) for p in curves)
        or "<p class='muted'>no training in this run</p>", "</section>",
        "<section><h2>Split</h2>", _split(target), "</section>",
        "<section><h2>Configuration</h2>",
        _table(settings) if len(settings) else "<p class='muted'>none recorded</p>",
        "</section>",
    ]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>minc-keras: {html.escape(target.name)}</title><style>{STYLE}</style>"
            f"</head><body><header><h1>minc-keras run: {html.escape(target.name)}</h1>"
            f"<p>{html.escape(str(target.resolve()))} &middot; minc-keras {__version__}</p>"
            f"</header><main>{''.join(parts)}</main><script>{SELF_CHECK}</script>"
            "</body></html>")
    return write_text_atomic(report / "report.html", page)
