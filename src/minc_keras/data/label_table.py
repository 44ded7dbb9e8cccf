"""A table naming the label codes (a BIDS ``dseg.tsv``): ``index``, ``name``, and others.

A label set of many structures (hippocampus, amygdala, ..., left and right apart) has
codes that are not contiguous (4, 11, ..., 207). The cache maps them to classes
0..K-1 (:mod:`minc_keras.data.cache`); this table names each class, and pairs the left
and right structures so that a left-right flip can swap them (:func:`mirror_classes`).
Other columns (``tissue``, ``scored_2012``, ...) are kept.

Examples
--------
>>> table = LabelTable([4, 17, 53], ["3rd Ventricle", "Left Hippocampus",
...                                  "Right Hippocampus"])
>>> table.class_names([0, 4, 17, 53])
['background', '3rd Ventricle', 'Left Hippocampus', 'Right Hippocampus']
>>> table.mirror_classes([0, 4, 17, 53])
[0, 1, 3, 2]
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from minc_keras.core.errors import UsageError

#: The columns every table must have.
REQUIRED = ("index", "name")
_SIDE = re.compile(r"^(left|right)([ _-]?)(.*)$", re.IGNORECASE)


@dataclass
class LabelTable:
    """The codes of a label set, their names, and any other columns.

    Attributes
    ----------
    indices : list of int
        The label code of each row (the value in the label files).
    names : list of str
        The name of each row.
    columns : dict of str to list of str
        Every other column, a value per row.
    """

    indices: list[int]
    names: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)

    def name_of(self) -> dict[int, str]:
        """The name of each code."""
        return dict(zip(self.indices, self.names, strict=True))

    def class_names(self, class_values: list[int]) -> list[str]:
        """A name per class of ``class_values`` (code 0 is ``background`` unless named).

        Raises
        ------
        UsageError
            If a code present in the labels is not in the table.
        """
        names = self.name_of()
        missing = [v for v in class_values if v and v not in names]
        if missing:
            raise UsageError(
                f"the label table has no row for label code{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))} found in the labels; add "
                f"{'them' if len(missing) > 1 else 'it'} to the table"
            )
        return [names.get(v, "background") for v in class_values]

    def mirror_classes(self, class_values: list[int]) -> list[int]:
        """The class each class becomes under a left-right flip (itself when unpaired).

        Names starting ``Left``/``Right`` (any case, followed by a space, ``_``, ``-`` or
        nothing) are paired when the rest of the name is the same.
        """
        return mirror_classes(self.class_names(class_values))


def mirror_classes(class_names: list[str]) -> list[int]:
    """The class each named class becomes under a left-right flip (itself when unpaired).

    >>> mirror_classes(["background", "Left-Caudate", "Right-Caudate", "Brain Stem"])
    [0, 2, 1, 3]
    """
    sides: dict[tuple[str, str], int] = {}
    for index, name in enumerate(class_names):
        match = _SIDE.match(name.strip())
        if match and match.group(3):
            sides[(match.group(1).lower(), match.group(3).strip().lower())] = index
    mirror = list(range(len(class_names)))
    for (side, rest), index in sides.items():
        other = sides.get(("right" if side == "left" else "left", rest))
        if other is not None:
            mirror[index] = other
    return mirror


def read_label_table(path: str | Path) -> LabelTable:
    """Read a tab-separated table with columns ``index`` and ``name`` (and any others).

    Raises
    ------
    UsageError
        If the file cannot be read, lacks a column, has an index that is not a whole
        number, or repeats an index.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"the label table {path} cannot be read ({error})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UsageError(f"the label table {path} has no column {' or '.join(missing)}; it needs "
                         "tab-separated columns `index` and `name`")
    try:
        indices = [int(row["index"]) for row in rows]
    except (TypeError, ValueError):
        raise UsageError(f"the label table {path} has an `index` that is not a whole number"
                         ) from None
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise UsageError(f"the label table {path} repeats index {', '.join(map(str, repeated))}; "
                         "give each code one row")
    others = [c for c in header if c not in REQUIRED and c is not None]
    return LabelTable(indices, [str(row["name"] or "").strip() for row in rows],
                      {c: [row[c] for row in rows] for c in others})
