"""The outputs of one predicted scan, written as a set: labels, probability maps, sidecar.

For a scan whose outputs are named ``<name>`` (:func:`minc_keras.predict.inputs.output_names`):
``<name>_dseg.<suffix>`` (labels in the scan's grid and format), optionally
``<name>_label-<class>_probseg.<suffix>`` (:func:`bids_label`: ``label-GM``,
``label-label1``), and ``<name>_dseg.json`` (model, versions, class names, source, volumes,
QC). If one of them cannot be written, none is left.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minc_keras import __version__
from minc_keras.core.atomic import write_text_atomic
from minc_keras.core.errors import OutputExistsError, UsageError
from minc_keras.io import Volume, output_suffix, read_volume, write_volume
from minc_keras.predict.inputs import check_is_scan, scan_name
from minc_keras.predict.qc import normalised_entropy
from minc_keras.predict.volumes import tissue_volumes
from minc_keras.preprocessing.plausibility import check_like_training, foreground_ml

if TYPE_CHECKING:  # the backend is imported only where a model runs (see predict.processes)
    from minc_keras.inference.segment import Segmentation
    from minc_keras.inference.segmenter import Segmenter
    from minc_keras.models.info import ModelInfo


def output_paths(path: Path, out_dir: Path, name: str) -> tuple[Path, Path]:
    """The labels and sidecar of scan ``path``, whose outputs are named ``name``.

    >>> [p.name for p in output_paths(Path("in/s1.mnc"), Path("out"), "a_s1")]
    ['a_s1_dseg.mnc', 'a_s1_dseg.json']
    """
    return out_dir / f"{name}_dseg{output_suffix(path)}", out_dir / f"{name}_dseg.json"


def bids_label(name: str, index: int) -> str:
    """A class name as the value of a BIDS ``label-`` entity: its letters and digits only.

    BIDS entity values are alphanumeric, and a name such as ``grey matter`` or ``a/b``
    must not split a file name or make a folder.

    >>> bids_label("label_1", 1), bids_label("grey matter", 2), bids_label("__", 3)
    ('label1', 'greymatter', 'class3')
    """
    return re.sub(r"[^0-9A-Za-z]", "", name) or f"class{index}"


def is_bids_name(name: str) -> bool:
    """Whether an output name is a BIDS derivative's (it holds folders).

    >>> is_bids_name("sub-01/anat/sub-01_desc-unet"), is_bids_name("a_s1")
    (True, False)
    """
    return "/" in name


def probseg_path(out_dir: Path, name: str, label: str, suffix: str) -> Path:
    """A class's probability map: ``label-`` goes before ``desc-`` in a BIDS name.

    >>> probseg_path(Path("o"), "s1", "GM", ".mnc").as_posix()
    'o/s1_label-GM_probseg.mnc'
    >>> probseg_path(Path("o"), "sub-1/anat/sub-1_desc-unet", "GM", ".nii").as_posix()
    'o/sub-1/anat/sub-1_label-GM_desc-unet_probseg.nii'
    """
    if is_bids_name(name) and "_desc-" in name:
        head, desc = name.rsplit("_desc-", 1)
        return out_dir / f"{head}_label-{label}_desc-{desc}_probseg{suffix}"
    return out_dir / f"{name}_label-{label}_probseg{suffix}"


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bids_keys(path: Path, out_dir: Path, model_path: Path, info_dict: dict) -> dict:
    """The BIDS sidecar keys: ``Sources`` (the input, relative to the derivative) and model."""
    source = Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()
    try:
        sha = _file_sha256(str(Path(model_path).resolve()))
    except OSError:
        sha = None
    return {"Sources": [source],
            "Model": {"Name": Path(model_path).name, "Path": str(model_path), "SHA256": sha,
                      **info_dict}}


def _sidecar_labels(path: Path) -> str | None:
    """The labels file a ``_dseg.json`` sidecar names, or None (no sidecar, or not ours)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (OSError, ValueError, AttributeError):
        return None


def _sidecar(segmenter: Segmenter, path: Path, label_path: Path, model_path: Path,
             row: dict) -> dict:
    """The ``_dseg.json`` of scan ``path``: model, versions, classes, volumes and QC."""
    info = segmenter.info
    return {"source": str(path), "labels": str(label_path), "model": str(model_path),
            "minc_keras_version": __version__,
            "keras_backend": info.keras_backend,
            "class_values": info.class_values, "class_names": info.class_names,
            "views": segmenter.views, "shift_passes": segmenter.shift_passes,
            "tta": segmenter.tta,
            "class_offsets": segmenter.class_offsets,
            "volumes_ml": {k: v for k, v in row.items() if k.endswith("_ml")},
            "qc_entropy": row["qc_entropy"]}


def _probability_maps(result: Segmentation, class_names: list[str]
                      ) -> list[tuple[np.ndarray, str]]:
    """Each kept class's probability map with its ``label-`` value (one map for one
    sigmoid)."""
    if result.probabilities is None:
        return [(result.class_maps[index], bids_label(class_names[index], index))
                for index in sorted(result.class_maps)]
    count = result.probabilities.shape[-1]
    return [(result.probabilities[..., index],
             bids_label(class_names[index if count > 1 else 1], index))
            for index in range(1 if count == 1 else 0, count)]


def wanted_classes(save_probabilities: bool | list[str], info: ModelInfo) -> bool | list[int]:
    """The classes whose probability maps are written: all (True), none, or those named.

    Raises
    ------
    UsageError
        If a name is not one of the model's classes.
    """
    if isinstance(save_probabilities, bool):
        return save_probabilities
    unknown = [n for n in save_probabilities if n not in info.class_names]
    if unknown:
        raise UsageError(
            f"`save_probabilities` names {', '.join(repr(n) for n in unknown)}, which the model "
            f"does not have; its {len(info.class_names)} classes are named in its _dseg.tsv"
        )
    return sorted({info.class_names.index(n) for n in save_probabilities})


def _write_set(result: Segmentation, volume: Volume, sidecar: dict, *, path: Path,
               out_dir: Path, name: str, model_path: Path, class_names: list[str],
               clobber: bool, save_probabilities: bool | list[str]) -> None:
    """Write a scan's outputs as a set: if one cannot be written, none is left."""
    label_path, sidecar_path = output_paths(path, out_dir, name)
    written: list[Path] = []
    # The sidecar goes first and the labels last, so a scan whose labels exist (what
    # --skip-existing looks for) always has its sidecar, and its volumes.csv row can be
    # restored even if the job was killed; probability maps beside a sidecar but no labels
    # are what such a job left, and are replaced.
    unfinished = not label_path.exists() and _sidecar_labels(sidecar_path) == str(label_path)
    try:
        written.append(write_text_atomic(sidecar_path, json.dumps(sidecar, indent=1)))
        if save_probabilities:
            for probability, label in _probability_maps(result, class_names):
                written.append(write_volume(
                    Volume(probability, volume.affine),
                    probseg_path(out_dir, name, label, output_suffix(path)),
                    clobber=clobber or unfinished))
        written.append(write_volume(
            Volume(result.labels, volume.affine), label_path, clobber=clobber,
            history=f"minc-keras {__version__} predict --model {model_path} {path}"))
    except BaseException:
        for done in written:
            done.unlink(missing_ok=True)
        raise


def segment_file(segmenter: Segmenter, path: Path, out_dir: Path, *, model_path: Path,
                 clobber: bool = False, save_probabilities: bool | list[str] = False,
                 batch_size: int = 8, name: str | None = None) -> dict:
    """Segment one scan file and write its outputs; return its row for ``volumes.csv``.

    ``name`` starts the outputs' file names (default: the scan's, :func:`scan_name`).

    Raises
    ------
    OutputExistsError
        If the labels exist already and ``clobber`` is false.
    MincKerasError
        If the scan cannot be read, is a label map, or an output cannot be written.
    """
    # Deferred: segment_volume imports the Keras backend, which the parent process of the
    # fresh-process runner (predict.processes) must never import; only a process that runs
    # a model calls this function.
    from minc_keras.inference.segment import segment_volume

    name = name or scan_name(path)
    label_path = output_paths(path, out_dir, name)[0]
    if label_path.exists() and not clobber:
        raise OutputExistsError(f"{label_path} exists already; pass `clobber` to replace it")
    info = segmenter.info
    volume = read_volume(path)
    check_is_scan(volume.data)
    check_like_training(foreground_ml(volume.data, volume.affine), info.foreground_ml)
    # all the probabilities only when all are written: those of a model of 140 classes
    # do not fit in memory (inference.segment)
    result = segment_volume(segmenter, volume, batch_size=batch_size,
                            probabilities=wanted_classes(save_probabilities, info))
    qc = (result.qc_entropy if result.qc_entropy is not None
          else normalised_entropy(result.probabilities, result.classes > 0))
    row = {"scan": str(path), "output": str(label_path),
           **tissue_volumes(result.classes, info, volume.voxel_volume_ml),
           "qc_entropy": qc}
    sidecar = _sidecar(segmenter, path, label_path, model_path, row)
    if is_bids_name(name):
        sidecar.update(_bids_keys(path, out_dir, model_path, {
            "Views": segmenter.views, "ClassNames": info.class_names,
            "ClassValues": info.class_values}))
    _write_set(result, volume, sidecar,
               path=path, out_dir=out_dir, name=name, model_path=model_path,
               class_names=info.class_names, clobber=clobber,
               save_probabilities=save_probabilities)
    return row
