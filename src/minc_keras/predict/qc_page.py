"""``OUT/qc.html``: one self-contained page to look at every predicted scan, outliers first.

The page is rebuilt from the folder's ``volumes.csv`` and the QC pictures present
(:func:`minc_keras.predict.qc_figures.qc_picture_path`), so several ``predict --qc`` runs
into one folder give one page. Each scan shows its picture, volumes and QC score; the
scans flagged by :func:`minc_keras.predict.qc.flag_outliers` come first, then the rest by
falling QC score. Pictures are embedded as data URIs and the style sheet is inline: the
file opens alone, with no network. Every piece of text from the table is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path

import pandas as pd

from minc_keras import __version__
from minc_keras.core.atomic import write_text_atomic
from minc_keras.predict.qc_figures import QC_PICTURE_SUFFIX, qc_picture_path

STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: #1f2937; background: #eef1f5; }
header { background: #1e3a5f; color: #fff; padding: 18px 28px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 4px 0 0; font-size: 12.5px; opacity: 0.85; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 20px 28px; }
section.scan { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
               margin: 14px 0; padding: 12px 16px; }
section.flagged { border: 2px solid #b91c1c; background: #fff5f5; }
h2 { font-size: 15px; margin: 0 0 6px; word-break: break-all; }
.badge { display: inline-block; background: #b91c1c; color: #fff; border-radius: 4px;
         padding: 1px 7px; font-size: 12px; margin-right: 8px; }
img { max-width: 100%; display: block; background: #000; border-radius: 4px; }
table { border-collapse: collapse; margin-top: 8px; font-size: 13px; }
td, th { padding: 2px 10px 2px 0; text-align: left; }
.missing { color: #6b7280; font-style: italic; }
"""


def _number(value: object) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "-" if math.isnan(number) else f"{number:.4g}"


def _is_flagged(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def _section(row: pd.Series, picture: Path | None) -> str:
    flagged = _is_flagged(row.get("qc_flag", False))
    title = html.escape(str(row["scan"]))
    badge = '<span class="badge">QC outlier</span>' if flagged else ""
    if picture is not None:
        data = base64.b64encode(picture.read_bytes()).decode("ascii")
        image = f'<img alt="QC picture of {title}" src="data:image/png;base64,{data}">'
    else:
        image = '<p class="missing">no QC picture (segmented without --qc)</p>'
    cells = "".join(f"<tr><th>{html.escape(str(name))}</th><td>{_number(row[name])}</td></tr>"
                    for name in row.index
                    if str(name).endswith("_ml") or name in ("gm_wm_ratio", "qc_entropy"))
    kind = "scan flagged" if flagged else "scan"
    return (f'<section class="{kind}" data-scan="{title}"><h2>{badge}{title}</h2>{image}'
            f"<table>{cells}</table></section>")


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Flagged scans first, then by falling QC score, then by name."""
    order = table.assign(_flag=table.get("qc_flag", False).map(_is_flagged),
                         _score=pd.to_numeric(table.get("qc_entropy"), errors="coerce"))
    order = order.sort_values(["_flag", "_score", "scan"], ascending=[False, False, True],
                              kind="stable", na_position="last")
    return order.drop(columns=["_flag", "_score"])


def write_qc_page(out_dir: str | os.PathLike) -> Path | None:
    """Rebuild ``out_dir/qc.html`` from ``volumes.csv`` and the QC pictures present.

    Returns the page, or None when the folder has no ``volumes.csv``.
    """
    out_dir = Path(out_dir)
    table_path = out_dir / "volumes.csv"
    if not table_path.exists():
        return None
    table = pd.read_csv(table_path)
    pictures = {p.name: p for p in out_dir.rglob(f"*{QC_PICTURE_SUFFIX}")}
    sections = []
    for _, row in _ordered(table).iterrows():
        picture = pictures.get(qc_picture_path(str(row["output"])).name)
        sections.append(_section(row, picture))
    flagged = int(table.get("qc_flag", pd.Series(dtype=object)).map(_is_flagged).sum())
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>minc-keras QC: {html.escape(out_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body><header><h1>Segmentation QC</h1>"
            f"<p>{len(table)} scans, {flagged} flagged as outliers of the QC score "
            f"(model uncertainty); minc-keras {html.escape(__version__)}</p></header>"
            f"<main>{''.join(sections)}</main></body></html>\n")
    return write_text_atomic(out_dir / "qc.html", page)
