"""Test-split metrics of a run's model: loss and accuracy, Dice and volumes per subject and
class, and the label volumes of chosen test subjects.

Nothing here writes a report: :func:`minc_keras.workflows.evaluate` writes
``report/metrics.csv``, ``report/summary.json``, the montages and ``report.html`` from what
these functions return.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from minc_keras.core.errors import DatasetError, UsageError
from minc_keras.core.layout import RunLayout
from minc_keras.core.progress import progress
from minc_keras.data.cache import CachedScan, SliceCache
from minc_keras.data.dataset import SliceDataset
from minc_keras.data.patches import PatchDataset
from minc_keras.inference.segmenter import Segmenter, check_classes, load_segmenter, segment_cached
from minc_keras.models import dice_per_class
from minc_keras.models.info import ModelInfo
from minc_keras.models.saving import load_trained
from minc_keras.preprocessing.transforms import VOLUME_VIEW

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Test-split results.

    ``predictions`` and ``report`` are filled in by :func:`minc_keras.workflows.evaluate`
    (the files it wrote); ``info`` is the evaluated model's metadata.
    """

    loss: float
    metric: float
    metric_name: str
    table: pd.DataFrame
    mean_dice: dict[str, float]
    parameters: int
    seconds_per_volume: float = float("nan")  # median network time per test volume
    network: str = ""  # the zoo name, or the Keras name of a user's own network
    info: ModelInfo | None = None
    predictions: list[Path] = field(default_factory=list)
    report: Path | None = None


def _model_path(layout: RunLayout, model_name: str) -> Path:
    """The run's model file; DatasetError naming the step to run when there is none."""
    path = layout.model_file(model_name)
    if not path.is_file():
        raise DatasetError(f"no trained model at {path}; run `minc-keras train` first")
    return path


def evaluate_test_split(target: str | Path, *, model_name: str = "model.keras",
                        batch_size: int = 8, quiet: bool = False) -> Evaluation:
    """Evaluate the run's model on its test split (writes nothing).

    Parameters
    ----------
    target : path-like
        The run folder.
    model_name : str
        File under ``TARGET/model``.
    batch_size : int
        Slices per batch for the loss/metric pass.
    quiet : bool
        No progress bar.

    Returns
    -------
    Evaluation
        Keras' loss and accuracy on the test slices, and a table of Dice and volumes per
        test subject and class (empty when the split has no test subjects).
    """
    layout = RunLayout(target)
    cache = SliceCache.open(layout.data)
    path = _model_path(layout, model_name)
    model, info = load_trained(path)
    check_classes(info, cache, path)
    segmenter = load_segmenter(path)
    test = cache.by_category("test")
    table = pd.DataFrame()
    loss = metric = seconds_per_volume = float("nan")
    metric_name = "categorical_accuracy"
    if test:
        scores = model.evaluate(_test_data(cache, info, batch_size), return_dict=True,
                                verbose=0)
        loss = float(scores.get("loss", np.nan))
        metric_name = next((k for k in scores if k.endswith("accuracy")), metric_name)
        metric = float(scores.get(metric_name, np.nan))
        table, seconds = _dice_table(segmenter, cache, test, quiet=quiet)
        seconds_per_volume = float(np.median(seconds))
    mean_dice = (table.groupby("class_name", sort=False)["dice"].mean().to_dict()
                 if len(table) else {})
    # a network of the user's own (TrainOptions.builder) is known by its Keras name
    network = model.name if info.model_type == "custom-builder" else str(info.model_type)
    return Evaluation(loss, metric, metric_name, table, mean_dice, segmenter.count_params(),
                      seconds_per_volume, network=network, info=segmenter.info)


def _test_data(cache: SliceCache, info: ModelInfo, batch_size: int):
    """The test split as the model's inputs: whole scans for a network of volumes."""
    if info.view == VOLUME_VIEW:  # whole test scans, one per batch
        return PatchDataset(cache, "test", patch_size=None, num_outputs=info.num_outputs,
                            multiple=info.multiple)
    return SliceDataset(cache, "test", view=info.view, batch_size=batch_size,
                        num_outputs=info.num_outputs, multiple=info.multiple)


def _dice_table(segmenter: Segmenter, cache: SliceCache, test: list[int], *,
                quiet: bool) -> tuple[pd.DataFrame, list[float]]:
    """Dice and volumes per test subject and class; the network time of each volume."""
    info = segmenter.info
    classes = list(range(1, info.classes))
    rows, seconds = [], []
    for index in progress(test, desc="evaluating", unit="scan", disable=quiet):
        scan = cache.scans[index]
        start = time.perf_counter()
        predicted = segment_cached(segmenter, cache, index)
        seconds.append(time.perf_counter() - start)
        truth = cache.classes(np.asarray(cache.label(index)))
        if info.num_outputs == 1:
            truth = (truth > 0).astype(np.uint8)
        dice = dice_per_class(predicted, truth, classes)
        voxel_ml = abs(np.linalg.det(np.asarray(scan.affine)[:3, :3])) / 1000.0
        for c in classes:
            rows.append({
                "subject": scan.subject, "session": scan.session, "class": c,
                "label_value": info.class_values[c], "class_name": info.class_names[c],
                "dice": dice[c], "volume_true_ml": float((truth == c).sum() * voxel_ml),
                "volume_pred_ml": float((predicted == c).sum() * voxel_ml),
            })
    return pd.DataFrame(rows), seconds


def select_test_subjects(cache: SliceCache, spec: str | None) -> list[int]:
    """Cache indices of the test scans chosen by ``--predict``.

    ``spec`` is ``all``, or comma-separated 1-based positions in the test split
    (``1,4``), or subject names (``sub-03``); None or empty selects none.
    """
    test = cache.by_category("test")
    if not spec:
        return []
    if spec.strip().lower() == "all":
        return test
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item.isdigit():
            position = int(item)
            if not 1 <= position <= len(test):
                raise UsageError(
                    f"`predict` {item}: the test split has {len(test)} subjects; give positions "
                    f"1 to {len(test)}, subject names, or `all`"
                )
            chosen.append(test[position - 1])
        else:
            matches = [i for i in test if item in (cache.scans[i].subject, cache.scans[i].name)]
            if not matches:
                names = [cache.scans[i].name for i in test]
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more"
                                                if len(names) > 5 else "") or "none"
                raise UsageError(f"`predict` {item}: no test subject of that name; give "
                                 f"`all`, positions 1 to {len(test)}, or names such as {shown}")
            chosen.extend(matches)
    return list(dict.fromkeys(chosen))


@dataclass
class SubjectPrediction:
    """The model's segmentation of one test scan of the cache.

    Attributes
    ----------
    scan : CachedScan
        The scan (its input path, grid and file stem).
    image : ndarray of float32
        Its preprocessed image (cropped, RAS order).
    truth, predicted : ndarray of uint8
        Reference and predicted class indices in the same grid as ``image``.
    labels : ndarray of int16
        The predicted label values in the scan's own grid and axis order.
    model_path : Path
        The model that predicted it.
    info : ModelInfo
        That model's metadata (class names).
    """

    scan: CachedScan
    image: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray
    model_path: Path
    info: ModelInfo


def predict_test_scans(target: str | Path, spec: str | None, *,
                       model_name: str = "model.keras", quiet: bool = False,
                       ) -> Iterator[SubjectPrediction]:
    """Segment the test scans chosen by ``spec`` (:func:`select_test_subjects`), one by one.

    Yields
    ------
    SubjectPrediction
        Each chosen scan's segmentation, in the cache's grid and in the scan's own.
    """
    layout = RunLayout(target)
    cache = SliceCache.open(layout.data)
    chosen = select_test_subjects(cache, spec)
    if not chosen:
        return
    path = _model_path(layout, model_name)
    segmenter = load_segmenter(path)
    info = segmenter.info
    check_classes(info, cache, path)
    values = np.asarray(info.class_values, dtype=np.int32)
    preprocessor = info.preprocessor
    for index in progress(chosen, desc="predicting", unit="scan", disable=quiet):
        scan = cache.scans[index]
        predicted = segment_cached(segmenter, cache, index)
        labels = values[predicted] if info.num_outputs > 1 else values[1] * predicted
        full = preprocessor.inverse(labels.astype(np.int16), scan.placement)
        truth = cache.classes(np.asarray(cache.label(index)))
        image = np.asarray(cache.image(index), np.float32)
        yield SubjectPrediction(scan, image, truth, predicted, full, path, info)
