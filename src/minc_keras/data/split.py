"""Split scans into train, validate and test by subject, and keep the split in ``images.csv``.

The split is by *person*: all sessions of a subject land in the same category,
so no test subject is ever seen in training. ``--ratios 0.7 0.15`` gives 70 % of
the subjects to training, 15 % to validation and the rest to testing.

Counts use the largest-remainder rule over the three shares ``r * n``: each
category gets the whole part of its share, and the subjects left over go one each
to the largest fractional parts (ties: train, then validate, then test). Then
every category whose share is above zero gets at least one subject, taken from
the category furthest above its share. The test share is zero only when the two
ratios sum to 1 (within 1e-9).

Which subjects go where: the sorted subject ids are shuffled with
``numpy.random.default_rng(seed)``; the first ``n_train`` train, the next
``n_validate`` validate, the rest test. The result depends on the seed and the
set of subjects only, never on the order of the scans.
"""

from __future__ import annotations

import csv
import logging
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from minc_keras.core.atomic import atomic_output
from minc_keras.core.errors import DatasetError, UsageError

log = logging.getLogger(__name__)

CATEGORIES = ("train", "validate", "test")
COLUMNS = ("subject", "session", "input", "label", "category")
_TOLERANCE = 1e-9


class _ScanLike(Protocol):
    subject: str
    session: str
    input: Path
    label: Path | None


def check_ratios(ratios: Sequence[float]) -> tuple[float, float]:
    """Validate ``--ratios`` and return them as two floats.

    Parameters
    ----------
    ratios : sequence of two numbers
        Fractions of the subjects for training and validation.

    Returns
    -------
    (float, float)

    Raises
    ------
    UsageError
        If there are not two numbers, one is outside [0, 1], they sum above 1, or
        the training ratio is 0.

    Examples
    --------
    >>> check_ratios([0.7, 0.15])
    (0.7, 0.15)
    """
    try:
        values = list(ratios)
    except TypeError:
        values = [ratios]
    if len(values) != 2 or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    ):
        raise UsageError(
            f"`ratios` takes two numbers, the train and validate fractions, not {ratios!r}; "
            "for example `ratios` 0.7 0.15"
        )
    train, validate = (float(v) for v in values)
    shown = f"`ratios` {train:g} {validate:g}"
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in (train, validate)):
        raise UsageError(f"{shown}: each ratio must be between 0 and 1; give two fractions "
                         "such as `ratios` 0.7 0.15")
    if train + validate > 1 + _TOLERANCE:
        raise UsageError(
            f"{shown} sum to {train + validate:g}, above 1; the test split gets "
            "1 - train - validate, so keep the sum at most 1"
        )
    if train == 0:
        raise UsageError(
            f"{shown}: the training ratio is 0, so nothing would be trained on; "
            "give a positive training ratio such as 0.7"
        )
    return train, validate


def split_counts(n: int, ratios: Sequence[float]) -> dict[str, int]:
    """How many of ``n`` subjects go to each category.

    Parameters
    ----------
    n : int
        Number of subjects; at least the number of categories with a share above 0.
    ratios : sequence of two numbers
        Train and validate fractions; test gets the rest.

    Returns
    -------
    dict of str to int
        ``{"train": ..., "validate": ..., "test": ...}``, summing to ``n``.

    Raises
    ------
    UsageError
        If ``ratios`` are invalid (see :func:`check_ratios`).
    DatasetError
        If ``n`` is too small to give each category with a share above 0 a subject.

    Examples
    --------
    >>> split_counts(20, (0.7, 0.15))
    {'train': 14, 'validate': 3, 'test': 3}
    >>> split_counts(10, (0.7, 0.15))  # shares 7, 1.5, 1.5: the tie goes to validate
    {'train': 7, 'validate': 2, 'test': 1}
    >>> split_counts(3, (0.7, 0.15))  # every category gets one
    {'train': 1, 'validate': 1, 'test': 1}
    >>> split_counts(5, (0.8, 0.2))  # ratios summing to 1: no test split
    {'train': 4, 'validate': 1, 'test': 0}
    """
    fractions = _fractions(check_ratios(ratios))
    needed = [c for c in CATEGORIES if fractions[c] > 0]
    if n < len(needed):
        raise DatasetError(
            f"{n} subjects cannot be split {len(needed)} ways ({', '.join(needed)}); "
            f"add subjects or set `ratios` so fewer categories get a share"
        )
    shares = {c: fractions[c] * n for c in CATEGORIES}
    # round shares to 1e-9 first so 0.29 * 100 = 28.999999999999996 counts as 29
    counts = {c: math.floor(round(s, 9)) for c, s in shares.items()}
    by_remainder = sorted(CATEGORIES, key=lambda c: -(round(shares[c], 9) - counts[c]))
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    for c in needed:
        if counts[c] == 0:
            donor = max(
                (d for d in CATEGORIES if counts[d] > 1), key=lambda d: counts[d] - shares[d]
            )
            counts[donor] -= 1
            counts[c] = 1
    return counts


def assign_categories(
    scans: Iterable[_ScanLike], ratios: Sequence[float] = (0.7, 0.15), *, seed: int = 0
) -> dict[str, str]:
    """Give each subject a category, ``"train"``, ``"validate"`` or ``"test"``.

    Parameters
    ----------
    scans : iterable of Scan
        Anything with a ``subject`` attribute; a subject's scans all go together.
    ratios : sequence of two numbers
        Train and validate fractions of the subjects; test gets the rest.
    seed : int
        Seed of the shuffle; the same seed and subjects give the same split.

    Returns
    -------
    dict of str to str
        Subject -> category.

    Raises
    ------
    UsageError
        If ``ratios`` or ``seed`` are invalid.
    DatasetError
        If there are too few subjects for the categories the ratios ask for.
    """
    train, validate = check_ratios(ratios)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UsageError(f"`seed` must be a whole number 0 or above, not {seed!r}")
    subjects = sorted({scan.subject for scan in scans})
    needed = [c for c, f in _fractions((train, validate)).items() if f > 0]
    if len(subjects) < len(needed):
        shown = ", ".join(subjects[:10]) if subjects else "none"
        raise DatasetError(
            f"found {len(subjects)} subjects ({shown}) but `ratios` {train:g} {validate:g} "
            f"split subjects {len(needed)} ways ({', '.join(needed)}), which needs at least "
            f"{len(needed)}; add subjects, or give fewer categories a share (validate ratio 0, "
            "or ratios summing to 1)"
        )
    counts = split_counts(len(subjects), (train, validate))
    order = np.random.default_rng(int(seed)).permutation(len(subjects))
    bounds = np.cumsum([counts[c] for c in CATEGORIES])
    categories = {}
    for rank, index in enumerate(order):
        categories[subjects[index]] = CATEGORIES[int(np.searchsorted(bounds, rank, "right"))]
    log.info(
        "split %d subjects: %s", len(subjects), ", ".join(f"{counts[c]} {c}" for c in CATEGORIES)
    )
    return categories


def summarise_split(
    scans: Iterable[_ScanLike], categories: dict[str, str]
) -> dict[str, tuple[int, int]]:
    """Subjects and scans per category, for printing.

    Parameters
    ----------
    scans : iterable of Scan
    categories : dict of str to str
        From :func:`assign_categories`.

    Returns
    -------
    dict of str to (int, int)
        ``{category: (subjects, scans)}`` for all three categories, zeros included.
    """
    subjects: dict[str, set[str]] = {c: set() for c in CATEGORIES}
    n_scans = dict.fromkeys(CATEGORIES, 0)
    for scan in scans:
        category = _category_of(scan, categories)
        subjects[category].add(scan.subject)
        n_scans[category] += 1
    return {c: (len(subjects[c]), n_scans[c]) for c in CATEGORIES}


def write_split_csv(
    scans: Iterable[_ScanLike],
    categories: dict[str, str],
    path: str | os.PathLike,
    *,
    clobber: bool = True,
) -> Path:
    """Write the split as a CSV (``images.csv``), atomically.

    Columns: subject, session, input, label, category; one row per scan in the
    order given; paths absolute (resolved, as ``prepare`` compares them); label
    ``""`` when a scan has none.

    Parameters
    ----------
    scans : iterable of Scan
    categories : dict of str to str
        From :func:`assign_categories`.
    path : path-like
        The CSV file.
    clobber : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputExistsError, TargetError
        If the file exists and ``clobber`` is false, or cannot be written.
    """
    rows = [
        (
            scan.subject,
            scan.session,
            str(Path(scan.input).resolve()),
            str(Path(scan.label).resolve()) if scan.label else "",
            _category_of(scan, categories),
        )
        for scan in scans
    ]
    with (
        atomic_output(path, clobber=clobber) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    log.info("wrote the split of %d scans to %s", len(rows), path)
    return Path(path)


def read_split_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split written by :func:`write_split_csv`.

    Parameters
    ----------
    path : path-like
        The CSV file.

    Returns
    -------
    pandas.DataFrame
        Columns subject, session, input, label, category (more are kept), all
        strings; missing sessions and labels are ``""``.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, lacks a column or names an unknown category.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file {path} does not exist; run `minc-keras prepare` first")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"split file {path} is not a readable CSV ({exc}); run `minc-keras prepare` again"
        ) from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(
            f"split file {path} lacks the columns {', '.join(missing)}; "
            "run `minc-keras prepare` again"
        )
    unknown = sorted(set(table["category"]) - set(CATEGORIES))
    if unknown:
        raise DatasetError(
            f"split file {path} has unknown categories {', '.join(unknown)} "
            f"(expected {', '.join(CATEGORIES)}); run `minc-keras prepare` again"
        )
    return table


def _fractions(ratios: tuple[float, float]) -> dict[str, float]:
    train, validate = ratios
    test = 0.0 if abs(1 - train - validate) <= _TOLERANCE else 1 - train - validate
    return {"train": train, "validate": validate, "test": test}


def _category_of(scan: _ScanLike, categories: dict[str, str]) -> str:
    try:
        return categories[scan.subject]
    except KeyError:
        raise ValueError(
            f"subject {scan.subject} has no category; split the same scans that are written"
        ) from None
