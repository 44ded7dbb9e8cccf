"""The scans ``predict`` is given: found in files, folders and globs, named, and checked.

A subject's folder holds label maps beside its scans, and a cohort often holds scans of
the same name in different folders: :func:`collect_inputs` finds the scans,
:func:`output_names` gives each a unique name for its outputs, and
:func:`check_is_scan` refuses a label map given as a scan.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minc_keras.core.errors import DatasetError, UsageError
from minc_keras.io import IMAGE_SUFFIXES

#: A volume with at most this many distinct whole-number values is a label map or mask.
LABEL_MAP_MAX_VALUES = 32


def _is_image(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


class NotAScanError(DatasetError):
    """A file given or found as a scan is a label map or mask (:func:`check_is_scan`)."""


@dataclass
class Inputs:
    """The scans ``predict`` was given, and which of them it found by searching."""

    scans: list[Path] = field(default_factory=list)
    #: Scans found in a folder or by a glob rather than named (a non-scan there is skipped).
    searched: set[Path] = field(default_factory=set)


def _listed(list_file: Path) -> list[str]:
    """The scans a ``@list.txt`` names, one per line, relative to the list's folder.

    Blank lines and lines starting with ``#`` are ignored.
    """
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the list of scans {list_file} ({exc}); give a text file "
                         "with one scan per line") from None
    entries = [line.strip() for line in lines]
    return [str(list_file.parent / entry) for entry in entries
            if entry and not entry.startswith("#")]


def find_inputs(inputs: list[str]) -> Inputs:
    """Expand files, ``@list.txt`` files, folders (searched recursively) and globs.

    A ``@list.txt`` names scans, one per line, relative to its own folder; they count as
    named, like files on the command line.

    Raises
    ------
    UsageError
        If an input names nothing that exists, or nothing at all is found.
    """
    found: list[Path] = []
    searched: set[Path] = set()
    named: set[Path] = set()
    for item in inputs:
        if item.startswith("@") and len(item) > 1:
            listed = _listed(Path(item[1:]))
            missing = [entry for entry in listed if not Path(entry).is_file()]
            if missing:
                raise UsageError(f"{missing[0]} (listed in {item[1:]}) is not a file; check the "
                                 "list: one scan per line, relative to the list's folder")
            found += [Path(entry) for entry in listed]
            named.update(Path(entry).resolve() for entry in listed)
            continue
        path = Path(item)
        if path.is_dir():
            walked = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
            searched.update(p.resolve() for p in walked)
            found += walked
        elif path.exists():
            found.append(path)
            named.add(path.resolve())
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"{item} matches no file or folder; check the path or the glob")
            files = [p for p in matches if p.is_file()]
            searched.update(p.resolve() for p in files)
            found += files
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise UsageError(f"no scans (.mnc, .mnc.gz, .nii, .nii.gz) found in {' '.join(inputs)}; "
                         "give scan files, folders that hold them, or globs")
    return Inputs(unique, searched - named)


def collect_inputs(inputs: list[str]) -> list[Path]:
    """The scans of :func:`find_inputs`, sorted as found.

    Raises
    ------
    UsageError
        If an input names nothing that exists, or nothing at all is found.
    """
    return find_inputs(inputs).scans


def scan_name(path: Path) -> str:
    """File name without its image suffix.

    >>> scan_name(Path("a/sub-01_T1w.nii.gz")), scan_name(Path("b.MNC"))
    ('sub-01_T1w', 'b')
    """
    lower = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def output_names(scans: list[Path]) -> dict[Path, str]:
    """The name each scan's outputs take: its file name without the suffix, made unique.

    Scans that share a name (``a/T1.mnc`` and ``b/T1.mnc``, as in a cohort of one folder
    per subject) are told apart by the fewest parent folders that differ, joined by ``_``
    (``a_T1``, ``b_T1``); the same name in two formats in one folder by the format
    (``T1_mnc``, ``T1_niigz``).

    Raises
    ------
    UsageError
        If two scans would still write the same outputs.

    Examples
    --------
    >>> names = output_names([Path("/d/a/T1.mnc"), Path("/d/b/T1.mnc"), Path("/d/b/x.nii")])
    >>> [names[Path(p)] for p in ("/d/a/T1.mnc", "/d/b/T1.mnc", "/d/b/x.nii")]
    ['a_T1', 'b_T1', 'x']
    >>> sorted(output_names([Path("/d/T1.mnc"), Path("/d/T1.nii.gz")]).values())
    ['T1_mnc', 'T1_niigz']
    """
    groups: dict[str, list[Path]] = {}
    for scan in scans:
        groups.setdefault(scan_name(scan), []).append(scan)
    names: dict[Path, str] = {}
    for stem, group in groups.items():
        names.update(zip(group, _told_apart(stem, group), strict=True))
    taken: dict[str, Path] = {}
    for scan, name in names.items():
        if name in taken:
            raise UsageError(f"{taken[name]} and {scan} would both write {name}_dseg.*; rename "
                             "one, or segment them into separate output folders")
        taken[name] = scan
    return names


def _told_apart(stem: str, group: list[Path]) -> list[str]:
    """Names for scans that share ``stem``: parent folders first, then the format."""
    if len(group) == 1:
        return [stem]
    folders = [scan.parent.parts[1:] if scan.parent.is_absolute() else scan.parent.parts
               for scan in group]
    formats = ["".join(c for c in scan.name[len(stem):] if c.isalnum()).lower() for scan in group]
    depth = max(len(f) for f in folders)
    tries = [[f"{'_'.join(f[-k:])}_{stem}" for f in folders] for k in range(1, depth + 1)]
    tries += [[f"{'_'.join(f[len(f) - k:])}_{stem}_{fmt}".lstrip("_")
               for f, fmt in zip(folders, formats, strict=True)] for k in range(depth + 1)]
    for names in tries:
        if len(set(names)) == len(names):
            return names
    return [stem] * len(group)  # the same file twice: refused by the caller


def check_is_scan(data: np.ndarray) -> None:
    """Refuse a label map or mask given as a scan (a subject's folder holds both).

    Raises
    ------
    NotAScanError
        If ``data`` (every second voxel along each axis) holds at most
        :data:`LABEL_MAP_MAX_VALUES` distinct values, all whole numbers.

    >>> check_is_scan(np.linspace(0, 1, 512).reshape(8, 8, 8))
    >>> check_is_scan(np.zeros((4, 4, 4)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    minc_keras.predict.inputs.NotAScanError: it holds 1 distinct value (0), so it is a label map...
    """
    values = np.unique(np.asarray(data)[::2, ::2, ::2])
    if len(values) > LABEL_MAP_MAX_VALUES or not np.array_equal(values, np.round(values)):
        return
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise NotAScanError(f"it holds {len(values)} distinct value{'s' if len(values) != 1 else ''} "
                        f"({shown}), so it is a label map or mask, not a scan; leave it out "
                        "of the inputs")  # the caller names the file

