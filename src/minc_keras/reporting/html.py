"""``TARGET/report/report.html``: one self-contained page per evaluated run, for people.

The page shows the headline numbers (model, parameters, test accuracy, mean Dice, training
and inference times, the class offsets of ``--calibrate``), Dice per test subject and
class, montages of the predicted test subjects, the learning curves, the split and the
configuration. Images are embedded as data URIs and the style sheet is inline, so the file
can be mailed or archived alone and opened with no network. Every piece of text from the
run is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd

from minc_keras import __version__
from minc_keras.core.atomic import write_text_atomic
from minc_keras.core.layout import RunLayout
from minc_keras.reporting.summary import RunSummary, read_json, summarise_run

#: Subject names listed per split before "and N more".
_NAMES_SHOWN = 24

STYLE = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #1e3a5f;
        --soft: #f3f6fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: var(--ink); background: #eef1f5; }
header { background: var(--accent); color: #fff; padding: 20px 32px; }
header h1 { margin: 0; font-size: 21px; font-weight: 600; }
header p { margin: 4px 0 0; font-size: 12.5px; opacity: 0.8; word-break: break-all; }
main { max-width: 1180px; margin: 0 auto; padding: 4px 24px 28px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 4px 22px 16px; margin: 18px 0; }
h2 { font-size: 15px; font-weight: 600; color: var(--accent); margin: 14px 0 12px;
     padding-bottom: 8px; border-bottom: 1px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
         gap: 10px; }
.card { background: var(--soft); border-radius: 6px; padding: 10px 14px; }
.card b { display: block; font-size: 19px; font-weight: 600;
          font-variant-numeric: tabular-nums; }
.card span { font-size: 12px; color: var(--muted); }
.card.dice { background: #e8f3ec; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr));
           gap: 18px; }
.wide figure { max-width: 1100px; }
figure { margin: 0; }
img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
      border-radius: 4px; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
h3 { font-size: 13px; font-weight: 600; color: var(--muted); margin: 14px 0 6px; }
.options { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr));
           gap: 0 24px; font-size: 13px; }
.options div { display: flex; justify-content: space-between; gap: 12px;
               padding: 5px 2px; border-bottom: 1px solid var(--line); }
.options span { color: var(--muted); }
.options code { font: 12.5px ui-monospace, Menlo, Consolas, monospace; text-align: right;
                word-break: break-all; }
.muted { color: var(--muted); }
footer { text-align: center; font-size: 12px; color: var(--muted); padding-bottom: 24px; }
"""

# Once everything has loaded, the page records how many of its images decoded: a
# self-check that a test reads back from a headless browser.
SELF_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(function (image) {
    return image.complete && image.naturalWidth > 0;
  }).length;
});
"""


def _text(value: object) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value))


def _image(path: Path, caption: str) -> str:
    """A figure with the PNG at ``path`` embedded as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_text(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_text(caption)}</figcaption></figure>")


def _table(frame: pd.DataFrame, *, digits: int = 3, total_last: bool = False) -> str:
    """An HTML table; floats right-aligned with ``digits`` decimals, NaN as ``-``."""
    head = "".join(f"<th>{_text(c)}</th>" for c in frame.columns)
    rows = []
    for position, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for value in row:
            if isinstance(value, float):
                text = "-" if math.isnan(value) else f"{value:.{digits}f}"
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{_text(value)}</td>")
        total = total_last and position == len(frame) - 1
        rows.append(("<tr class='total'>" if total else "<tr>") + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _muted(text: str) -> str:
    return f"<p class='muted'>{_text(text)}</p>"


def _cards(summary: RunSummary) -> str:
    """The headline numbers as cards; unknown ones as ``-``."""
    def card(value: str, label: str, kind: str = "") -> str:
        return (f"<div class='card {kind}'><b>{_text(value)}</b><span>{_text(label)}</span>"
                "</div>")

    def shown(value: float | None, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    cards = [card(summary.model or "-", "model"),
             card(shown(summary.parameters, "{:,}"), "parameters"),
             card(shown(summary.epochs, "{}"), "epochs trained"),
             card(shown(summary.test_accuracy, "{:.4f}"), f"test {summary.metric_name}"),
             card(shown(summary.test_loss, "{:.4f}"), "test loss"),
             card(shown(summary.training_minutes, "{:.1f} min"), "training time"),
             card(shown(summary.inference_seconds, "{:.2f} s"), "inference per volume")]
    cards += [card(f"{dice:.3f}", f"mean Dice {name}", "dice")
              for name, dice in summary.mean_dice.items()]
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _calibration(summary: RunSummary) -> str:
    """The class offsets of ``--calibrate`` and how they were fitted; empty when none."""
    fit = summary.calibration
    offsets = fit.get("offsets") if isinstance(fit.get("offsets"), dict) else {}
    if not offsets:
        return ""
    count = fit.get("scans")
    scans = f"{count or '?'} validation scan{'' if count == 1 else 's'}"
    if fit.get("atrophied_copies"):
        grown = fit.get("atrophy_voxels")
        by = f" by {grown:g} voxels" if isinstance(grown, float) else ""
        copies = fit["atrophied_copies"]
        scans += (f" and {copies} atrophied cop{'y' if copies == 1 else 'ies'} of them "
                  f"(darkest class, the ventricles, enlarged{by})")
    before, after = fit.get("dice_before"), fit.get("dice_after")
    gain = (f"; their mean Dice {before:.3f} without, {after:.3f} with"
            if isinstance(before, float) and isinstance(after, float) else "")
    rows = pd.DataFrame({"class": list(offsets),
                         "offset": [float(v) for v in offsets.values()],
                         "probability factor": [math.exp(float(v)) for v in offsets.values()]})
    return ("<h3>Class offsets (--calibrate)</h3>"
            f"<p>Every prediction multiplies each class's probability by its factor, fitted "
            f"after training on {_text(scans)}{_text(gain)}.</p>" + _table(rows, digits=2))


def _dice_table(target: Path) -> str:
    """Dice per test scan (rows) and class (columns), with the mean over scans last."""
    try:
        metrics = pd.read_csv(RunLayout(target).metrics_csv, dtype={"session": str})
    except (OSError, ValueError, pd.errors.EmptyDataError):
        metrics = pd.DataFrame()
    if metrics.empty or not {"subject", "class_name", "dice"} <= set(metrics.columns):
        return _muted("No test subjects were evaluated.")
    index = ["subject", "session"] if "session" in metrics else ["subject"]
    metrics[index] = metrics[index].fillna("")
    wide = metrics.pivot_table(index=index, columns="class_name", values="dice",
                               sort=False).reset_index()
    wide.columns.name = None
    classes = list(dict.fromkeys(metrics["class_name"]))
    mean = {"subject": "mean", **{c: float(wide[c].mean()) for c in classes}}
    wide = pd.concat([wide[[*index, *classes]], pd.DataFrame([mean])], ignore_index=True)
    return _table(wide.fillna({"session": ""}), total_last=True)


def _split_table(target: Path) -> str:
    """Subjects and scans per split category, with the subjects' names."""
    try:
        split = pd.read_csv(RunLayout(target).images_csv, dtype=str).fillna("")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        split = pd.DataFrame()
    if not {"subject", "category"} <= set(split.columns):
        return _muted("No split recorded.")
    rows = []
    for category, part in split.groupby("category", sort=False):
        names = sorted(part["subject"].unique())
        listed = ", ".join(names[:_NAMES_SHOWN])
        if len(names) > _NAMES_SHOWN:
            listed += f" and {len(names) - _NAMES_SHOWN} more"
        rows.append({"split": category, "subjects": len(names), "scans": len(part),
                     "names": listed})
    return _table(pd.DataFrame(rows))


def _options(options: dict) -> str:
    """Option names and values as a grid of pairs (None left out)."""
    def shown(value: object) -> str:
        return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)

    items = "".join(f"<div><span>{_text(name)}</span><code>{_text(shown(value))}</code></div>"
                    for name, value in options.items() if value is not None)
    return f"<div class='options'>{items}</div>"


def _configuration(target: Path) -> str:
    """The data options (from ``data/manifest.json``) and the model and training options."""
    data = read_json(target / "data" / "manifest.json").get("config", {})
    training = read_json(RunLayout(target).config)
    parts = [f"<h3>{title}</h3>{_options(options)}"
             for title, options in (("data", data), ("model and training", training))
             if options]
    return "".join(parts) or _muted("No configuration recorded.")


def _figures(paths: list[Path], caption: Callable[[Path], str], empty: str, *,
             kind: str = "gallery") -> str:
    """The PNGs at ``paths`` with their captions, or ``empty`` when there are none."""
    if not paths:
        return _muted(empty)
    return f"<div class='{kind}'>" + "".join(_image(p, caption(p)) for p in paths) + "</div>"


def render_report(target: str | os.PathLike) -> str:
    """The report page of the run in ``target``, as HTML text.

    Parameters
    ----------
    target : path-like
        A run folder; pieces it does not hold yet are shown as missing.

    Returns
    -------
    str
        A complete HTML document with no external resources.
    """
    target = Path(target)
    report = RunLayout(target).report_dir
    summary = summarise_run(target)
    curves = sorted(report.glob("learning_curves*.png"))
    montages = sorted(RunLayout(target).predict_test.glob("*_montage.png"))
    sections = [
        ("Summary", _cards(summary) + _calibration(summary)),
        ("Dice per test subject and class", _dice_table(target)),
        ("Predicted test subjects",
         _figures(montages, lambda p: f"{p.name.removesuffix('_montage.png')}: input | "
                  "reference | prediction", "None predicted; rerun with --predict all to "
                  "see the test subjects here.")),
        ("Learning curves",
         _figures(curves, lambda p: p.stem.replace("_", " ") + " (training solid, "
                  "validation dashed)", "No learning curves (the model was not trained "
                  "in this folder).", kind="wide")),
        ("Split", _split_table(target)),
        ("Configuration", _configuration(target)),
    ]
    body = "".join(f"<section><h2>{_text(title)}</h2>{content}</section>"
                   for title, content in sections)
    written = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>minc-keras: {_text(target.name)}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>minc-keras run: {_text(target.name)}</h1>"
        f"<p>{_text(target.resolve())} &middot; {_text(written)}</p></header>"
        f"<main>{body}</main><footer>Written by minc-keras {_text(__version__)} from the "
        f"files in {_text(target.name)}/model and {_text(target.name)}/report.</footer>"
        f"<script>{SELF_CHECK}</script></body></html>\n"
    )


def write_html_report(target: str | os.PathLike) -> Path:
    """Write ``TARGET/report/report.html`` (atomically) from what the run left in ``TARGET``.

    Parameters
    ----------
    target : path-like
        A run folder after ``evaluate``; the montages appear for the test subjects that
        were predicted (``--predict``).

    Returns
    -------
    Path
        The page written.
    """
    return write_text_atomic(RunLayout(target).report_html, render_report(target))
