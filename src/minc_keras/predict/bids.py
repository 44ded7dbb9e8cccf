"""BIDS derivatives of ``predict --bids``: names, ``dataset_description.json``, ``dseg.tsv``.

For ``sub-01_ses-1_T1w.nii.gz`` the labels are
``OUT/sub-01/ses-1/anat/sub-01_ses-1_desc-<desc>_dseg.nii.gz`` (:func:`bids_output_names`;
MINC scans give the same names with ``.mnc``); the folder gets a
``dataset_description.json`` (DatasetType ``derivative``, GeneratedBy minc-keras), a
``dseg.tsv`` of the classes and a ``.bidsignore`` for the files BIDS does not name
(``volumes.csv``, ``qc.html``, the QC pictures): :func:`write_dataset_files`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from minc_keras import __version__
from minc_keras.core.atomic import write_text_atomic
from minc_keras.core.errors import UsageError
from minc_keras.predict.inputs import scan_name

#: The BIDS version the derivatives follow.
BIDS_VERSION = "1.10.0"

#: Files and folders of a derivative folder that BIDS does not name.
BIDS_IGNORED = ("volumes.csv", "qc.html", "sub-*/figures/")


def bids_desc(model_path: str | Path) -> str:
    """The ``desc-`` value naming a model's outputs: its file name, or its run's folder.

    ``train`` saves ``TARGET/model/model.keras``, so a model named ``model`` is named by
    its run folder; letters and digits only, as BIDS values are.

    >>> bids_desc("runs/unet-3/model/model.keras"), bids_desc("m/big_unet.keras")
    ('unet3', 'bigunet')
    """
    path = Path(model_path)
    stem = path.name.split(".")[0]
    if stem == "model" and path.parent.name == "model" and path.parent.parent.name:
        stem = path.parent.parent.name
    return re.sub(r"[^0-9A-Za-z]", "", stem) or "minckeras"


def write_dataset_files(out_dir: Path) -> None:
    """Write ``dataset_description.json`` and ``.bidsignore`` where they are missing."""
    description = out_dir / "dataset_description.json"
    if not description.exists():
        write_text_atomic(description, json.dumps({
            "Name": "minc-keras segmentations", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "minc-keras", "Version": __version__}]}, indent=2) + "\n")
    ignore = out_dir / ".bidsignore"
    if not ignore.exists():
        write_text_atomic(ignore, "\n".join(BIDS_IGNORED) + "\n")


def write_dseg_tsv(out_dir: Path, class_values: list[int], class_names: list[str]) -> Path:
    """``OUT/dseg.tsv``: the value (``index``) and ``name`` of each class of the labels."""
    rows = [f"{value}\t{name}" for value, name in zip(class_values, class_names, strict=False)]
    return write_text_atomic(out_dir / "dseg.tsv", "index\tname\n" + "\n".join(rows) + "\n")


#: A BIDS raw scan's name: ``sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>``.
BIDS_NAME = re.compile(r"^sub-(?P<sub>[0-9A-Za-z]+)(?:_ses-(?P<ses>[0-9A-Za-z]+))?"
                       r"(?P<entities>(?:_[a-z]+-[0-9A-Za-z]+)*)_(?P<suffix>[0-9A-Za-z]+)$")

#: Entities of the input kept in a ``dseg`` derivative's name, in BIDS order.
BIDS_KEPT = ("acq", "ce", "rec", "run")


def bids_output_names(scans: list[Path], desc: str) -> dict[Path, str]:
    """The BIDS-derivative names of ``scans``: ``sub-X/[ses-Y/]anat/<entities>_desc-<desc>``.

    The input's ``acq``, ``ce``, ``rec`` and ``run`` entities are kept; ``desc`` must be
    alphanumeric. The outputs add ``_dseg.<ext>``, ``_dseg.json`` and
    ``_label-<class>_desc-<desc>_probseg.<ext>``.

    Raises
    ------
    UsageError
        If a scan's name is not a BIDS name, or two scans would write the same outputs.

    Examples
    --------
    >>> names = bids_output_names([Path("/d/sub-01_ses-1_acq-fast_run-2_T1w.nii.gz")], "unet")
    >>> list(names.values())
    ['sub-01/ses-1/anat/sub-01_ses-1_acq-fast_run-2_desc-unet']
    """
    names: dict[Path, str] = {}
    taken: dict[str, Path] = {}
    for scan in scans:
        match = BIDS_NAME.match(scan_name(scan))
        if match is None:
            raise UsageError(f"{scan} is not named as BIDS names a scan (sub-<label>[_ses-<label>]"
                             "..._T1w.nii.gz); rename it, or leave out `bids`")
        pairs = dict(part.split("-", 1) for part in match["entities"].split("_") if part)
        entities = [f"sub-{match['sub']}"] + ([f"ses-{match['ses']}"] if match["ses"] else [])
        entities += [f"{key}-{pairs[key]}" for key in BIDS_KEPT if key in pairs]
        folder = "/".join(entities[:2] if match["ses"] else entities[:1])
        name = f"{folder}/anat/{'_'.join(entities)}_desc-{desc}"
        if name in taken:
            raise UsageError(f"{taken[name]} and {scan} would both write {name}_dseg.*; segment "
                             "them into separate output folders")
        taken[name] = scan
        names[scan] = name
    return names
