"""``minc-keras prepare``: discover scans, split subjects, write the split (and the cache)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from minc_keras.core.atomic import check_writable
from minc_keras.core.errors import OutputExistsError
from minc_keras.core.layout import RunLayout
from minc_keras.data.cache import build_cache
from minc_keras.data.discover import Discovery, discover
from minc_keras.data.label_table import read_label_table
from minc_keras.data.split import assign_categories, summarise_split, write_split_csv

log = logging.getLogger(__name__)

CATEGORIES = ("train", "validate", "test")


@dataclass
class PrepareSummary:
    """What ``prepare`` found and wrote, for the command line to print."""

    target: Path
    discovery: Discovery
    counts: dict[str, tuple[int, int]]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Subjects and scans per category, then notes (discovery itself is logged)."""
        out = []
        for category in CATEGORIES:
            subjects, scans = self.counts.get(category, (0, 0))
            out.append(f"{category:>8}: {subjects} subjects, {scans} scans")
        out += self.notes
        return out


def _same_split(existing: Path, new: pd.DataFrame) -> bool:
    old = pd.read_csv(existing, dtype=str, keep_default_na=False)
    cols = ["subject", "session", "input", "label", "category"]
    if not set(cols) <= set(old.columns):
        return False
    a = old[cols].sort_values(cols).reset_index(drop=True)
    b = new[cols].astype(str).sort_values(cols).reset_index(drop=True)
    return a.equals(b)


def _new_folders(target: Path) -> list[Path]:
    """The folders this run is about to create under ``target`` (outermost first)."""
    if not target.exists():
        return [target]
    return [target / name for name in ("data", "report") if not (target / name).exists()]


def prepare(source: str | Path, target: str | Path, *, input_str: str, label_str: str,
            ratios: tuple[float, float] = (0.7, 0.15), seed: int = 0,
            clobber: bool = False, quiet: bool = False,
            label_table: str | Path | None = None) -> PrepareSummary:
    """Discover scan/label pairs, split them by subject, write the split, fill the cache.

    The cache under ``TARGET/data`` holds each scan reoriented to RAS, normalised and
    cropped (see :mod:`minc_keras.data.cache`); unchanged scans are reused.

    Parameters
    ----------
    source, target : path-like
        Folder searched recursively for scans; folder receiving ``report/images.csv``.
    input_str, label_str : str
        Substring or glob naming the inputs and the labels.
    ratios : (float, float)
        Fractions of subjects for training and validation; the test split gets the rest.
    seed : int
        Seed of the split.
    clobber : bool
        Replace a split that differs from the one computed now, and rebuild the cache.
    quiet : bool
        No progress bar.
    label_table : path-like, optional
        A table naming the label codes (:mod:`minc_keras.data.label_table`): refused
        when it cannot be read or lacks a code found in the labels.

    Returns
    -------
    PrepareSummary

    Raises
    ------
    DatasetError, UsageError, OutputExistsError, TargetError
        With one sentence for the user.
    """
    target = Path(target)
    table = None if label_table is None else read_label_table(label_table)
    # a --target inside --source must not be searched: its predictions look like labels
    found = discover(source, input_str, label_str, exclude=[target])
    categories = assign_categories(found.scans, ratios, seed=seed)
    csv_path = RunLayout(target).images_csv
    rows = pd.DataFrame(
        [{"subject": s.subject, "session": s.session, "input": str(s.input.resolve()),
          "label": str(s.label.resolve()) if s.label else "", "category": categories[s.subject]}
         for s in found.scans]
    )
    if csv_path.exists() and not clobber and not _same_split(csv_path, rows):
        raise OutputExistsError(
            f"{csv_path} holds a different split from an earlier prepare; pass `clobber` to "
            "replace it (and everything trained on it) or choose another `target`"
        )
    created = _new_folders(target)
    check_writable(csv_path, clobber=True)
    config = {"source": str(Path(source).resolve()), "input_str": input_str,
              "label_str": label_str}
    try:
        cache = build_cache(rows.to_dict("records"), target / "data", config=config,
                            clobber=clobber, quiet=quiet)
        # the split is written last: it marks a target whose data are complete
        write_split_csv(found.scans, categories, csv_path, clobber=True)
    except BaseException:
        for folder in created:  # nothing half-made is left where nothing was before
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if table is not None:  # every code found is named (the cache stays: it is correct)
        table.class_names(cache.class_values)
    summary = PrepareSummary(target, found, summarise_split(found.scans, categories))
    summary.notes.append(
        f"cache: {len(cache.scans)} scans in {target / 'data'}, {cache.num_classes} classes "
        f"(label values {cache.class_values})"
    )
    return summary
