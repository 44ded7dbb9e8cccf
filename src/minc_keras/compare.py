"""``minc-keras compare``: the workshop's "Results for model_x" slides, as one table and chart.

One row per run folder: model, parameters, test accuracy, mean Dice per class, training
minutes and inference seconds per volume, read from what ``run`` (or ``train`` and
``evaluate``) left in each folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from minc_keras.atomic import atomic_output
from minc_keras.errors import UsageError


def run_row(target: Path) -> dict:
    """The comparison row of one run folder.

    Raises
    ------
    UsageError
        If ``target`` holds no evaluated run.
    """
    summary_path = target / "report" / "summary.json"
    if not target.is_dir():
        raise UsageError(f"{target} is not a folder; give run folders (the --target of runs)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"{target} holds no evaluated run ({summary_path} is missing or "
                         f"unreadable); run `minc-keras evaluate --target {target}` first"
                         ) from None
    try:
        config = json.loads((target / "model" / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    training = summary.get("training_seconds")
    row = {"run": target.name, "model": config.get("model_type", "?"),
           "parameters": summary.get("parameters"),
           "test accuracy": summary.get("test_metric"),
           **{f"Dice {name}": dice for name, dice in summary.get("mean_dice", {}).items()},
           "training min": training / 60 if training is not None else None,
           "inference s/volume": summary.get("seconds_per_volume")}
    return row


def compare_runs(targets: list[str | Path], output: str | Path = ".") -> tuple[pd.DataFrame,
                                                                              Path, Path]:
    """Compare run folders: the table, and the CSV and bar chart written into ``output``.

    Parameters
    ----------
    targets : list of path-like
        Run folders.
    output : path-like
        Folder for ``compare.csv`` and ``compare.png``.
    """
    if len(targets) < 1:
        raise UsageError("give at least one run folder to compare")
    table = pd.DataFrame([run_row(Path(t)) for t in targets])
    output = Path(output)
    csv_path, png_path = output / "compare.csv", output / "compare.png"
    with atomic_output(csv_path, clobber=True) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    _draw(table, png_path)
    return table, csv_path, png_path


def _draw(table: pd.DataFrame, path: Path) -> Path:
    """Bars of test accuracy and mean Dice per class, one group per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [c for c in table.columns if c == "test accuracy" or c.startswith("Dice ")]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(table) * max(len(scores), 1) / 2), 4))
    width = 0.8 / max(len(scores), 1)
    positions = np.arange(len(table))
    for k, column in enumerate(scores):
        values = pd.to_numeric(table[column], errors="coerce").fillna(0).to_numpy()
        bars = ax.bar(positions + k * width, values, width, label=column)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    labels = [f"{r}\n{m}, {p:,} par." if isinstance(p, (int, np.integer)) else f"{r}\n{m}"
              for r, m, p in zip(table["run"], table["model"], table["parameters"], strict=True)]
    ax.set_xticks(positions + width * (len(scores) - 1) / 2, labels, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score on the test subjects")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=max(len(scores), 1), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_output(path, clobber=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def format_table(table: pd.DataFrame) -> str:
    """The table as aligned text for the terminal."""
    shown = table.copy()
    for column in shown.columns:
        if column == "parameters":
            shown[column] = shown[column].map(lambda v: f"{v:,}" if pd.notna(v) else "-")
        elif shown[column].dtype.kind == "f" or column.startswith(("Dice", "test", "train",
                                                                     "infer")):
            digits = 1 if column in ("training min", "inference s/volume") else 3
            shown[column] = pd.to_numeric(shown[column], errors="coerce").map(
                lambda v, d=digits: "-" if pd.isna(v) else f"{v:.{d}f}")
    return shown.to_string(index=False)
