"""``minc-keras compare``: the workshop's "Results for model_x" slides as one table and chart.

One row per run folder: model, parameters, epochs, test loss and accuracy, mean Dice per
class, training minutes and inference seconds per volume, read from what ``run`` (or
``train`` and ``evaluate``) left in the folder (:mod:`minc_keras.reporting.summary`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from minc_keras.core.atomic import atomic_output
from minc_keras.core.errors import UsageError
from minc_keras.core.layout import RunLayout
from minc_keras.reporting.summary import RunSummary, summarise_run

#: Decimals shown in the terminal: 4 for loss and accuracy (as in ``Test: Loss= ...``),
#: 1 for times, 3 for Dice.
_DECIMALS = {"test_loss": 4, "test_accuracy": 4, "training_min": 1, "inference_s_per_volume": 1}


def _checked_summary(target: Path) -> RunSummary:
    """The summary of one run folder, refusing a folder that holds no evaluated run."""
    if not target.exists():
        raise UsageError(f"{target} does not exist; give the `target` folders of runs")
    if not target.is_dir():
        raise UsageError(f"{target} is not a folder; give the `target` folders of runs")
    layout = RunLayout(target)
    if not layout.config.is_file():
        raise UsageError(f"{target} holds no trained run (no model/config.json); give the "
                         "`target` folder of `minc-keras run` or `minc-keras train`")
    if not layout.metrics_csv.is_file():
        raise UsageError(f"{target} has not been evaluated (no report/metrics.csv); evaluate "
                         f"it first (`minc-keras evaluate` with `target` {target})")
    return summarise_run(target)


def _labels(targets: Sequence[Path]) -> list[str]:
    """Folder names, or the paths as given where two runs share a name.

    >>> _labels([Path("a/run"), Path("b/run"), Path("c/other")])
    ['a/run', 'b/run', 'other']
    """
    names = [t.name or str(t) for t in targets]
    return [str(t) if names.count(n) > 1 else n for t, n in zip(targets, names, strict=True)]


def comparison_table(targets: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per run folder; NaN where a run does not record a number.

    Parameters
    ----------
    targets : sequence of path-like
        Run folders (each evaluated: ``model/config.json`` and ``report/metrics.csv``).

    Returns
    -------
    DataFrame
        Columns ``run``, ``model``, ``parameters``, ``epochs``, ``test_loss``,
        ``test_accuracy``, ``dice_<class>`` for each class, ``training_min``,
        ``inference_s_per_volume``.

    Raises
    ------
    UsageError
        If no folder is given, or a folder holds no evaluated run.
    """
    paths = [Path(t) for t in targets]
    if not paths:
        raise UsageError("give at least one run folder to compare")
    summaries = [_checked_summary(p) for p in paths]
    rows = []
    for label, s in zip(_labels(paths), summaries, strict=True):
        rows.append({"run": label, "model": s.model or "-", "parameters": s.parameters,
                     "epochs": s.epochs, "test_loss": s.test_loss,
                     "test_accuracy": s.test_accuracy,
                     **{f"dice_{name}": dice for name, dice in s.mean_dice.items()},
                     "training_min": s.training_minutes,
                     "inference_s_per_volume": s.inference_seconds})
    table = pd.DataFrame(rows)
    # Dice columns of classes that only later runs have would come last: keep times last
    ends = ["training_min", "inference_s_per_volume"]
    table = table[[c for c in table.columns if c not in ends] + ends]
    for column in ("parameters", "epochs"):
        table[column] = table[column].astype("Int64")
    return table


def format_table(table: pd.DataFrame) -> str:
    """The table as aligned text for a terminal, ``-`` where a number is unknown."""
    shown = table.astype(object).copy()
    for column in table.columns:
        if column in ("run", "model"):
            continue
        digits = _DECIMALS.get(column, 3)
        integer = column in ("parameters", "epochs")
        shown[column] = [
            "-" if pd.isna(v) else f"{int(v):,}" if integer else f"{float(v):.{digits}f}"
            for v in table[column]]
    return shown.to_string(index=False)


def compare_runs(targets: Sequence[str | os.PathLike],
                 output: str | os.PathLike = ".") -> tuple[pd.DataFrame, Path, Path]:
    """Compare run folders: write ``compare.csv`` and ``compare.png`` into ``output``.

    Parameters
    ----------
    targets : sequence of path-like
        Run folders.
    output : path-like
        Folder for the CSV and the chart (created if missing; existing files replaced).

    Returns
    -------
    table : DataFrame
        See :func:`comparison_table`.
    csv_path, png_path : Path
        The files written.
    """
    table = comparison_table(targets)
    return (table, *write_comparison(table, output))


def write_comparison(table: pd.DataFrame, output: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``compare.csv`` and ``compare.png`` of ``table`` into the folder ``output``.

    Parameters
    ----------
    table : DataFrame
        From :func:`comparison_table`.
    output : path-like
        Folder for the CSV and the chart (created if missing; existing files replaced).

    Returns
    -------
    csv_path, png_path : Path
        The files written.
    """
    output = Path(output)
    csv_path, png_path = output / "compare.csv", output / "compare.png"
    with atomic_output(csv_path, clobber=True) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    draw_comparison(table, png_path)
    return csv_path, png_path


def draw_comparison(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Bar chart: test scores per run above; parameters, training and inference time below.

    Parameters
    ----------
    table : DataFrame
        From :func:`comparison_table`.
    path : path-like
        PNG to write.
    """
    import matplotlib
    import matplotlib.ticker
    from matplotlib.figure import Figure  # not pyplot: the user's backend is left alone

    scores = ["test_accuracy"] + [c for c in table.columns if c.startswith("dice_")]
    runs = np.arange(len(table))
    fig = Figure(figsize=(max(7.0, 1.5 + 1.1 * len(table) * len(scores) ** 0.5), 7.0))
    grid = fig.add_gridspec(2, 3, height_ratios=(3, 2), hspace=0.55, wspace=0.35)
    top = fig.add_subplot(grid[0, :])
    width = 0.8 / len(scores)
    for k, column in enumerate(scores):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        name = "test accuracy" if column == "test_accuracy" else "Dice " + column[5:]
        bars = top.bar(runs + (k - (len(scores) - 1) / 2) * width, np.nan_to_num(values),
                       width, label=name, color=matplotlib.colormaps["tab10"](k))
        top.bar_label(bars, labels=["-" if np.isnan(v) else f"{v:.3f}" for v in values],
                      fontsize=7, padding=2)
    top.set_xticks(runs, [f"{r}\n{m}" for r, m in zip(table["run"], table["model"],
                                                       strict=True)], fontsize=8)
    top.set_ylim(0, 1.1)
    top.set_ylabel("score on the test subjects")
    top.set_title("test accuracy and mean Dice per class", fontsize=10)
    top.legend(fontsize=8, ncol=len(scores), loc="upper center", bbox_to_anchor=(0.5, -0.18),
               frameon=False)
    top.grid(axis="y", alpha=0.3)
    panels = (("parameters", "parameters", "{:,.0f}"), ("training_min", "training (min)",
              "{:.1f}"), ("inference_s_per_volume", "inference (s per volume)", "{:.1f}"))
    for k, (column, title, fmt) in enumerate(panels):
        ax = fig.add_subplot(grid[1, k])
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bars = ax.bar(runs, np.nan_to_num(values), 0.6, color="#4c6a92")
        ax.bar_label(bars, labels=["-" if np.isnan(v) else fmt.format(v) for v in values],
                     fontsize=7, padding=2)
        ax.set_xticks(runs, table["run"], fontsize=7, rotation=20 if len(table) > 2 else 0)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.2)
        ax.tick_params(axis="y", labelsize=7)
        if column == "parameters":
            ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.grid(axis="y", alpha=0.3)
    with atomic_output(path, clobber=True) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return Path(path)
