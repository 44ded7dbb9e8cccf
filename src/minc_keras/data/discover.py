"""Find scans and their labels under a folder and pair them by BIDS entities.

Inputs and labels are told apart by ``--input-str`` / ``--label-str`` (a plain
substring or a glob, matched against the file name), and an input is paired with
the label whose *pairing key* is the same. The key is made of the standard BIDS
entities that identify one acquisition (:data:`PAIRING_ENTITIES`: ``sub``,
``ses``, ``task``, ``acq``, ``run``, ``space`` ...). Entities that describe a
derived file rather than the acquisition (``desc``, ``label``, ``seg``, ``res``,
``den``, ``hemi``) and any non-standard ones (the workshop's ``variant-seg``) are
left out, because they are exactly what differs between an image and its label:
``sub-01_ses-1_T1w.nii.gz`` and ``sub-01_ses-1_desc-fast_dseg.nii.gz`` share the
key ``(sub-01, ses-1)``. Pairing is exact: a label in another ``space`` or of
another ``run`` than its image is not paired, and is reported as unmatched.

Files without a ``sub-`` entity in their name or in a ``sub-*`` parent folder are
their own subject, named after their path below the source (prediction-only use).
"""

# Over the ~400-line guide: a third of it is docstrings and the errors' sentences; it is one
# concept (pairing scans with labels), and its helpers make sense only beside it.

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from minc_keras.core.errors import DatasetError, UsageError

log = logging.getLogger(__name__)

#: File name endings of the volumes that can be read (the io package exports the same tuple).
IMAGE_SUFFIXES = (".mnc", ".mnc.gz", ".nii", ".nii.gz")

#: BIDS entities that identify an acquisition, in the order of the BIDS entity table.
PAIRING_ENTITIES = tuple(
    "sub ses sample task tracksys acq nuc voi ce trc stain rec dir run mod echo flip inv mt part "
    "space split chunk".split()
)

_ENTITY = re.compile(r"([A-Za-z][A-Za-z0-9]*)-([A-Za-z0-9]+)")
_GLOB_CHARS = frozenset("*?[]")
_SHOWN = 5  # file names listed in one error message

Key = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scan:
    """One input volume, its label volume (None when it has none) and who it belongs to.

    Attributes
    ----------
    subject : str
        ``sub-XX`` (the BIDS ``participant_id``), or for a file without a ``sub-``
        entity its path below the source without suffix, ``/`` replaced by ``_``.
    session : str
        ``ses-YY``, or ``""`` when the scan has no session.
    input, label : Path
        Absolute paths (symbolic links are kept, not resolved).
    key : tuple of (str, str)
        The pairing entities, ``(("sub", "01"), ("ses", "1"))``; for a file without
        a ``sub-`` entity ``(("file", subject),)``.
    """

    subject: str
    session: str
    input: Path
    label: Path | None
    key: Key


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found.

    Attributes
    ----------
    scans : list of Scan
        Sorted by subject, session and input path. With a label pattern, only the
        inputs that have a label; without one, every input (``label`` is None).
    unmatched_inputs, unmatched_labels : list of Path
        Files that matched a pattern but found no partner; they are left out.
    source : Path or None
        The folder searched, used to print shorter names.
    """

    scans: list[Scan]
    unmatched_inputs: list[Path] = field(default_factory=list)
    unmatched_labels: list[Path] = field(default_factory=list)
    source: Path | None = None

    def describe_unmatched(self) -> list[str]:
        """One sentence per file that was left out, for the caller to log or print.

        Returns
        -------
        list of str
            Empty when every input and every label found its partner.
        """
        lines = []
        for kind, other, paths in (
            ("input", "label", self.unmatched_inputs),
            ("label", "input", self.unmatched_labels),
        ):
            lines += [
                f"{kind} {_short(p, self.source)} has no {other} with the same BIDS entities "
                f"({_describe_key(_pairing_key(p, self.source))}); it is left out"
                for p in paths
            ]
        return lines


def match_pattern(name: str, pattern: str) -> bool:
    """Whether a file name matches ``--input-str`` / ``--label-str``.

    A pattern holding any of ``* ? [ ]`` is a glob matched against the whole name
    with :func:`fnmatch.fnmatchcase`; any other pattern is a plain substring.
    Both are case-sensitive.

    Parameters
    ----------
    name : str
        A file name (not a path).
    pattern : str
        Substring or glob.

    Returns
    -------
    bool

    Examples
    --------
    >>> match_pattern("sub-01_T1w_anat.mnc", "T1w_anat")
    True
    >>> match_pattern("sub-01_T1w_anat.mnc", "*T1w_anat*")
    True
    >>> match_pattern("sub-01_T1w_anat.mnc", "T1w_anat*")  # a glob must match the whole name
    False
    >>> match_pattern("sub-01_variant-seg.mnc", "SEG")
    False
    """
    if _GLOB_CHARS.intersection(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def parse_entities(path: str | os.PathLike) -> dict[str, str]:
    """BIDS ``key-value`` entities of a file, from its name and its folders.

    Parts of the name (split at ``_``, suffix removed) of the form ``key-value``
    with alphanumeric key and value are entities; others (``T1w``, ``anat``,
    ``rsl``) are not. When the name has no ``sub-`` (``ses-``), it is taken from
    the nearest parent folder named ``sub-*`` (``ses-*``). The first occurrence
    of a key in the name wins.

    Parameters
    ----------
    path : path-like
        A file path; only the folders it names are looked at.

    Returns
    -------
    dict of str to str
        Entity values without their key, in the order found.

    Examples
    --------
    >>> parse_entities("sub-01_task-01_ses-01_T1w_anat_rsl.mnc")
    {'sub': '01', 'task': '01', 'ses': '01'}
    >>> parse_entities("sub-01/ses-1/anat/sub-01_acq-mp2rage_T1w.nii.gz")
    {'sub': '01', 'acq': 'mp2rage', 'ses': '1'}
    >>> parse_entities("data/sub-OAS10061/sub-OAS10061_variant-seg.mnc")
    {'sub': 'OAS10061', 'variant': 'seg'}
    >>> parse_entities("scans/brain_01.mnc")
    {}
    """
    path = Path(path)
    entities: dict[str, str] = {}
    for part in _strip_suffix(path.name).split("_"):
        match = _ENTITY.fullmatch(part)
        if match and match.group(1) not in entities:
            entities[match.group(1)] = match.group(2)
    for key in ("sub", "ses"):
        if key in entities:
            continue
        for parent in path.parents:
            match = _ENTITY.fullmatch(parent.name)
            if match and match.group(1) == key:
                entities[key] = match.group(2)
                break
    return entities


def discover(
    source: str | os.PathLike,
    input_str: str | None,
    label_str: str | None = None,
    *,
    exclude: Iterable[str | os.PathLike] = (),
) -> Discovery:
    """Find the inputs (and labels) under ``source`` and pair them by BIDS entities.

    ``source`` is searched recursively for ``.mnc``, ``.mnc.gz``, ``.nii`` and
    ``.nii.gz`` files; names starting with ``.`` (hidden files and folders, and
    the temporary files of :mod:`minc_keras.core.atomic`) are skipped. Linked folders
    are followed, each real folder being searched once, so a link loop cannot
    hang the search.

    A file matching only ``input_str`` is an input, one matching only
    ``label_str`` a label. A file matching both is the label of an input matching
    only ``input_str`` when it has that input's pairing key (two inputs may not
    share a key, so it cannot be a second input: ``--input-str T1w --label-str
    T1w_seg``), and an input otherwise.

    Parameters
    ----------
    source : path-like
        Folder holding the scans, in any layout: ``sub-01/sub-01_ses-01_T1w_anat.mnc``
        beside ``sub-01_ses-01_variant-seg.mnc``, or BIDS ``sub-01/ses-1/anat/...``
        with labels beside the image or under ``derivatives/``.
    input_str : str or None
        Substring or glob naming the inputs; None takes every image file.
    label_str : str or None
        Substring or glob naming the labels; None for prediction (no labels).
    exclude : iterable of path-like
        Folders not to search (an output folder inside ``source``).

    Returns
    -------
    Discovery

    Raises
    ------
    DatasetError
        If ``source`` is not a folder or holds no image file, a pattern matches
        nothing, two inputs (or two labels) share a pairing key, or no input has
        a label.
    UsageError
        If a pattern is empty or both patterns are the same.
    """
    root = _check_source(source)
    _check_patterns(input_str, label_str)
    files = _image_files(root, exclude)
    if not files:
        raise DatasetError(
            f"source folder {root} holds no {', '.join(IMAGE_SUFFIXES)} files; point `source` "
            "at the folder that holds your scans"
        )
    is_input = {f: input_str is None or match_pattern(f.name, input_str) for f in files}
    is_label = {f: label_str is not None and match_pattern(f.name, label_str) for f in files}
    if not any(is_input.values()):
        raise DatasetError(_matches_nothing("`input_str`", input_str, root, files))
    if label_str is not None and not any(is_label.values()):
        raise DatasetError(_matches_nothing("`label_str`", label_str, root, files))

    key_of = {f: _pairing_key(f, root) for f in files if is_input[f] or is_label[f]}
    pure_input_keys = {key_of[f] for f in files if is_input[f] and not is_label[f]}
    inputs = [
        f for f in files if is_input[f] and not (is_label[f] and key_of[f] in pure_input_keys)
    ]
    taken = set(inputs)
    labels = [f for f in files if is_label[f] and f not in taken]
    input_by_key = _unique_by_key(inputs, key_of, root, "inputs", "`input_str`")
    label_by_key = _unique_by_key(labels, key_of, root, "labels", "`label_str`")

    scans, unmatched_inputs = [], []
    for key, path in input_by_key.items():
        label = label_by_key.pop(key, None)
        if label_str is not None and label is None:
            unmatched_inputs.append(path)
            continue
        ents = dict(key)
        subject = f"sub-{ents['sub']}" if "sub" in ents else ents["file"]
        session = f"ses-{ents['ses']}" if "ses" in ents else ""
        scans.append(Scan(subject, session, path, label, key))
    scans.sort(key=lambda s: (s.subject, s.session, str(s.input)))
    found = Discovery(scans, sorted(unmatched_inputs), sorted(label_by_key.values()), root)
    if not scans:
        raise DatasetError(
            f"no input under {root} has a label with the same BIDS entities (unmatched inputs: "
            f"{_listing(found.unmatched_inputs, root)}; unmatched labels: "
            f"{_listing(found.unmatched_labels, root)}); name each label like its image, "
            "e.g. sub-01_ses-1_T1w.nii.gz and sub-01_ses-1_dseg.nii.gz"
        )
    log.info(
        "found %d scans of %d subjects under %s (%d inputs and %d labels left out)",
        len(scans),
        len({s.subject for s in scans}),
        root,
        len(found.unmatched_inputs),
        len(found.unmatched_labels),
    )
    for line in found.describe_unmatched():
        log.warning(line)
    return found


# -- helpers -------------------------------------------------------------------------------


def _strip_suffix(name: str) -> str:
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _has_image_suffix(name: str) -> bool:
    return name.endswith(IMAGE_SUFFIXES)


def _pairing_key(path: Path, root: Path | None) -> Key:
    """The pairing entities of ``path``, from its name and its folders from ``root`` down.

    A file with no ``sub-`` entity is keyed by its path below ``root`` (entity
    ``file``), so it pairs with nothing but never collides with another file.
    """
    rel = path
    if root is not None:
        try:
            rel = path.relative_to(root.parent)
        except ValueError:
            pass
    entities = parse_entities(rel)
    if "sub" not in entities:
        return (("file", _fallback_subject(path, root)),)
    return tuple((k, entities[k]) for k in PAIRING_ENTITIES if k in entities)


def _describe_key(key: Key) -> str:
    return ", ".join(f"{k}-{v}" for k, v in key) or "no BIDS entities"


def _fallback_subject(path: Path, root: Path | None) -> str:
    try:
        rel = path.relative_to(root) if root is not None else Path(path.name)
    except ValueError:
        rel = Path(path.name)
    return _strip_suffix(rel.as_posix()).replace("/", "_")


def _short(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _listing(paths: list[Path], root: Path) -> str:
    if not paths:
        return "none"
    shown = ", ".join(_short(p, root) for p in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def _check_source(source: str | os.PathLike) -> Path:
    root = Path(os.path.abspath(os.fspath(source)))
    if not root.exists():
        raise DatasetError(
            f"source folder {root} does not exist; pass `source` the folder that holds your scans"
        )
    if not root.is_dir():
        raise DatasetError(
            f"source {root} is a file, not a folder; pass `source` the folder that holds your scans"
        )
    return root


def _check_patterns(input_str: str | None, label_str: str | None) -> None:
    for parameter, pattern in (("`input_str`", input_str), ("`label_str`", label_str)):
        if pattern is not None and (not isinstance(pattern, str) or not pattern):
            raise UsageError(
                f"{parameter} is empty ({pattern!r}); give a substring or glob of the file names, "
                "e.g. T1w_anat or '*seg*'"
            )
    if input_str is not None and input_str == label_str:
        raise UsageError(
            f"`input_str` and `label_str` are both {input_str!r}; give patterns that tell the "
            "inputs from the labels, e.g. `input_str` T1w_anat and `label_str` seg"
        )


def _image_files(root: Path, exclude: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files under ``root``, sorted by path; each real folder is read once."""
    excluded: set[tuple[int, int]] = set()
    for folder in exclude:
        try:
            st = os.stat(folder)
        except OSError:
            continue
        excluded.add((st.st_dev, st.st_ino))
    seen = set(excluded)
    found: list[Path] = []
    real: list[str] = [os.fspath(root)]  # searched first, so a link into the tree is skipped
    linked: list[str] = []
    while real or linked:
        via_link = not real
        folder = real.pop() if real else linked.pop(0)
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                if via_link and (st.st_dev, st.st_ino) not in excluded:
                    log.warning("skipping linked folder %s: it leads to %s, which is searched "
                                "already (a link loop or a second link)", folder,
                                os.path.realpath(folder))
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as exc:
            log.warning("cannot read folder %s (%s); skipping it", folder, exc.strerror or exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    (linked if entry.is_symlink() else real).append(entry.path)
                elif _has_image_suffix(entry.name) and entry.is_file():
                    found.append(Path(entry.path))
            except OSError as exc:
                log.warning("cannot read %s (%s); skipping it", entry.path, exc.strerror or exc)
    return sorted(found)


def _matches_nothing(parameter: str, pattern: str | None, root: Path, files: list[Path]) -> str:
    names = sorted({f.name for f in files})
    shown = ", ".join(names[:_SHOWN]) + (
        f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    )
    hint = " (patterns match file names, not folders)" if pattern and "/" in pattern else ""
    return (
        f"{parameter} {pattern!r} matches none of the {len(files)} image files under {root}"
        f"{hint}; choose a substring or glob of names such as {shown}"
    )


def _unique_by_key(
    paths: list[Path], key_of: dict[Path, Key], root: Path, what: str, parameter: str
) -> dict[Key, Path]:
    """Map pairing key -> path, refusing two files with the same key."""
    groups: dict[Key, list[Path]] = defaultdict(list)
    for path in paths:
        groups[key_of[path]].append(path)
    for key, group in sorted(groups.items()):
        if len(group) > 1:
            names = " and ".join(_short(p, root) for p in group[:_SHOWN])
            more = f" (and {len(group) - _SHOWN} more)" if len(group) > _SHOWN else ""
            raise DatasetError(
                f"two {what} claim {_describe_key(key)}: {names}{more}; make {parameter} more "
                f"specific so that it matches one file per scan"
            )
    return {key: group[0] for key, group in groups.items()}
