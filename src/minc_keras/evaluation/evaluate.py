"""``minc-keras evaluate``: test-split loss and accuracy, per-subject Dice and volumes,
and the ``--predict`` label volumes and montages of chosen test subjects."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.orientations import io_orientation

from minc_keras.core.atomic import atomic_output
from minc_keras.core.errors import UsageError
from minc_keras.core.progress import progress
from minc_keras.data.cache import CachedScan, SliceCache
from minc_keras.data.dataset import SliceDataset
from minc_keras.data.patches import PatchDataset
from minc_keras.inference.segmenter import check_classes, load_segmenter, segment_cached
from minc_keras.io import Volume, output_suffix, write_volume
from minc_keras.models import dice_per_class
from minc_keras.models.saving import load_trained
from minc_keras.preprocessing.transforms import VOLUME_VIEW, from_canonical
from minc_keras.reporting.figures import save_montage
from minc_keras.reporting.summary import calibration_summary, write_summary

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Test-split results."""

    loss: float
    metric: float
    metric_name: str
    table: pd.DataFrame
    mean_dice: dict[str, float]
    parameters: int
    seconds_per_volume: float = float("nan")  # median network time per test volume


def evaluate(target: str | Path, *, model_name: str = "model.keras", batch_size: int = 8,
             quiet: bool = False) -> Evaluation:
    """Evaluate the trained model on the test split and write ``report/metrics.csv``.

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
    """
    target = Path(target)
    cache = SliceCache.open(target / "data")
    path = target / "model" / Path(model_name).with_suffix(".keras").name
    model, info = load_trained(path)
    check_classes(info, cache, path)
    segmenter = load_segmenter(path)
    test = cache.by_category("test")
    table = pd.DataFrame()
    loss = metric = seconds_per_volume = float("nan")
    metric_name = "categorical_accuracy"
    if test:
        if info["view"] == VOLUME_VIEW:  # whole test scans, one per batch
            data = PatchDataset(cache, "test", patch_size=None,
                                num_outputs=info["num_outputs"], multiple=info["multiple"])
        else:
            data = SliceDataset(cache, "test", view=info["view"], batch_size=batch_size,
                                num_outputs=info["num_outputs"], multiple=info["multiple"])
        scores = model.evaluate(data, return_dict=True, verbose=0)
        loss = float(scores.get("loss", np.nan))
        metric_name = next((k for k in scores if k.endswith("accuracy")), metric_name)
        metric = float(scores.get(metric_name, np.nan))
        rows = []
        seconds = []  # network time per volume, for the report
        for index in progress(test, desc="evaluating", unit="scan", disable=quiet):
            scan = cache.scans[index]
            start = time.perf_counter()
            predicted = segment_cached(segmenter, cache, index)
            seconds.append(time.perf_counter() - start)
            truth = cache.classes(np.asarray(cache.label(index)))
            if info["num_outputs"] == 1:
                truth = (truth > 0).astype(np.uint8)
            classes = list(range(1, max(info["num_outputs"], 2)))
            dice = dice_per_class(predicted, truth, classes)
            voxel_ml = abs(np.linalg.det(np.asarray(scan.affine)[:3, :3])) / 1000.0
            for c in classes:
                rows.append({
                    "subject": scan.subject, "session": scan.session, "class": c,
                    "label_value": info["class_values"][c], "class_name": info["class_names"][c],
                    "dice": dice[c], "volume_true_ml": float((truth == c).sum() * voxel_ml),
                    "volume_pred_ml": float((predicted == c).sum() * voxel_ml),
                })
        table = pd.DataFrame(rows)
        seconds_per_volume = float(np.median(seconds))
    with atomic_output(target / "report" / "metrics.csv", clobber=True) as tmp:
        table.to_csv(tmp, index=False)
    mean_dice = (table.groupby("class_name", sort=False)["dice"].mean().to_dict()
                 if len(table) else {})
    evaluation = Evaluation(loss, metric, metric_name, table, mean_dice,
                            segmenter.count_params(), seconds_per_volume)
    # a network of the user's own (TrainOptions.builder) is known by its Keras name
    network = model.name if info["model_type"] == "custom-builder" else info["model_type"]
    write_summary(target, model=network, parameters=evaluation.parameters, test_loss=loss,
                  test_accuracy=metric, metric_name=metric_name, mean_dice=mean_dice,
                  inference_seconds=seconds_per_volume,
                  calibration=calibration_summary(segmenter.info))
    return evaluation


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
                    f"--predict {item}: the test split has {len(test)} subjects; give positions "
                    f"1 to {len(test)}, subject names, or `all`"
                )
            chosen.append(test[position - 1])
        else:
            matches = [i for i in test if item in (cache.scans[i].subject, cache.scans[i].name)]
            if not matches:
                names = [cache.scans[i].name for i in test]
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more"
                                                if len(names) > 5 else "") or "none"
                raise UsageError(f"--predict {item}: no test subject of that name; give "
                                 f"`all`, positions 1 to {len(test)}, or names such as {shown}")
            chosen.extend(matches)
    return list(dict.fromkeys(chosen))


def to_original_grid(scan: CachedScan, cropped: np.ndarray, fill: int = 0) -> np.ndarray:
    """Put a cropped RAS-ordered array back into the scan's own array order and shape."""
    affine = np.asarray(scan.affine)
    ornt = io_orientation(affine)
    canonical_shape = [0, 0, 0]
    for axis, (target_axis, _) in enumerate(ornt):
        canonical_shape[int(target_axis)] = scan.shape[axis]
    canvas = np.full(canonical_shape, fill, dtype=cropped.dtype)
    box = tuple(slice(s, s + n) for s, n in zip(scan.crop_start, cropped.shape, strict=True))
    canvas[box] = cropped
    return np.ascontiguousarray(from_canonical(canvas, affine))


def predict_test_subjects(target: str | Path, spec: str | None, *,
                          model_name: str = "model.keras", clobber: bool = True,
                          quiet: bool = False) -> list[Path]:
    """Write label volumes (input's format and grid) and montages under ``predict/test``."""
    target = Path(target)
    cache = SliceCache.open(target / "data")
    chosen = select_test_subjects(cache, spec)
    if not chosen:
        return []
    path = target / "model" / Path(model_name).with_suffix(".keras").name
    segmenter = load_segmenter(path)
    info = segmenter.info
    check_classes(info, cache, path)
    out_dir = target / "predict" / "test"
    written = []
    values = np.asarray(info["class_values"], dtype=np.int32)
    for index in progress(chosen, desc="predicting", unit="scan", disable=quiet):
        scan = cache.scans[index]
        predicted = segment_cached(segmenter, cache, index)
        labels = values[predicted] if info["num_outputs"] > 1 else values[1] * predicted
        full = to_original_grid(scan, labels.astype(np.int16))
        suffix = output_suffix(scan.input)
        # the stem is the scan's name, made unique when runs share a session
        volume_path = out_dir / f"{scan.stem}_dseg{suffix}"
        write_volume(Volume(full, np.asarray(scan.affine)), volume_path, clobber=clobber,
                     history=f"minc-keras prediction of {scan.input} with {path}")
        truth = cache.classes(np.asarray(cache.label(index)))
        montage = save_montage(np.asarray(cache.image(index), np.float32), truth, predicted,
                               out_dir / f"{scan.stem}_montage.png",
                               num_classes=max(info["num_outputs"], 2),
                               class_names=info["class_names"], title=scan.stem)
        written += [volume_path, montage]
    return written
