"""`minc-keras predict`: new scans in their own grid and format, volumes and failures."""

import json
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from synthetic import XYZ_AFFINE, make_subject, train_tiny_model, write_dataset

from minc_keras.cli.main import main
from minc_keras.io import Volume, read_volume, write_volume
from minc_keras.preprocessing.transforms import to_canonical


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("trained"), epochs=4,
                            extra=("--class-names", "background,GM,WM"))


def _predict(model_path, out, *inputs, extra=()):
    return main(["predict", "--model", str(model_path), "-o", str(out), "--quiet",
                 *map(str, inputs), *extra])


def _scan(seed=11):
    image, labels = make_subject(seed)
    return Volume(image, XYZ_AFFINE.copy()), labels


def _orientations(volume):
    """The same scan stored three ways: RAS (x, y, z), LPS and MINC's (z, y, x)."""
    ras = Volume(volume.data, np.diag([1.0, 1.2, 1.5, 1.0]))
    ras.affine[:3, 3] = [-10, -20, -15]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_data = ras.data[::-1, ::-1, :].copy()
    lps_affine = ras.affine @ np.array([[-1, 0, 0, ras.shape[0] - 1], [0, -1, 0, ras.shape[1] - 1],
                                        [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert np.allclose((flip @ lps_affine)[:3, :3], np.diag([1.0, 1.2, 1.5]))
    zyx = Volume(ras.data.transpose(2, 1, 0).copy(), ras.affine[:, [2, 1, 0, 3]])
    return {"ras": ras, "lps": Volume(lps_data, lps_affine), "zyx": zyx}


def test_same_world_labels_whatever_the_storage_order(model_path, tmp_path):
    volume, _ = _scan()
    inputs = {}
    for name, stored in _orientations(volume).items():
        suffix = ".mnc" if name == "zyx" else ".nii.gz"
        inputs[name] = write_volume(stored, tmp_path / "in" / f"{name}{suffix}")
    assert _predict(model_path, tmp_path / "out", *inputs.values()) == 0
    world = {}
    for name, path in inputs.items():
        suffix = ".mnc" if name == "zyx" else ".nii.gz"
        out = read_volume(tmp_path / "out" / f"{name}_dseg{suffix}", label=True)
        original = read_volume(path)
        assert out.shape == original.shape
        np.testing.assert_allclose(out.affine, original.affine, atol=1e-5)
        world[name] = to_canonical(out.data, out.affine)[0]
    assert len(np.unique(world["ras"])) == 3
    np.testing.assert_array_equal(world["ras"], world["lps"])
    np.testing.assert_array_equal(world["ras"], world["zyx"])


@pytest.mark.parametrize("fmt", ["minc2", "minc1", "nifti"])
def test_output_keeps_format_shape_and_affine(model_path, tmp_path, fmt):
    volume, _ = _scan(12)
    if fmt == "nifti":
        path = write_volume(volume, tmp_path / "scan.nii")
    else:
        path = write_volume(Volume(volume.data.transpose(2, 1, 0).copy(),
                                   volume.affine[:, [2, 1, 0, 3]]), tmp_path / "scan.mnc")
        if fmt == "minc1":
            if shutil.which("mincconvert") is None:
                pytest.skip("minc-tools not installed")
            minc1 = tmp_path / "scan1.mnc"
            subprocess.run(["mincconvert", str(path), str(minc1)], check=True)
            with open(minc1, "rb") as handle:
                assert handle.read(3) == b"CDF"
            path = minc1
    assert _predict(model_path, tmp_path / "out", path) == 0
    suffix = ".nii" if fmt == "nifti" else ".mnc"
    out = read_volume(tmp_path / "out" / f"{path.name.split('.')[0]}_dseg{suffix}", label=True)
    original = read_volume(path)
    assert out.shape == original.shape
    np.testing.assert_allclose(out.affine, original.affine, atol=1e-5)
    sidecar = json.loads((tmp_path / "out" / f"{path.name.split('.')[0]}_dseg.json").read_text())
    assert sidecar["class_names"] == ["background", "GM", "WM"]
    assert sidecar["source"] == str(path.resolve())


def test_anisotropic_scan_is_resampled_and_returned_in_its_grid(model_path, tmp_path):
    # the model was trained at 1 x 1.2 x 1.5 mm; this scan is 0.86 x 1.5 x 0.86 mm, LPS
    image, labels = make_subject(13, shape_xyz=(26, 21, 31))
    affine = np.array([[-0.86, 0, 0, 12.0], [0, -1.5, 0, 15.0], [0, 0, 0.86, -13.0],
                       [0, 0, 0, 1.0]])
    path = write_volume(Volume(image, affine), tmp_path / "aniso.nii.gz")
    assert _predict(model_path, tmp_path / "out", path) == 0
    out = read_volume(tmp_path / "out" / "aniso_dseg.nii.gz", label=True)
    assert out.shape == image.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    brain = (out.data > 0) & (labels > 0)
    assert brain.sum() / (labels > 0).sum() > 0.8


def test_volumes_csv_equals_voxel_counts_times_voxel_volume(model_path, tmp_path):
    paths = []
    for seed in (21, 22):
        volume, _ = _scan(seed)
        paths.append(write_volume(volume, tmp_path / f"s{seed}.nii.gz"))
    assert _predict(model_path, tmp_path / "out", tmp_path, extra=["--save-probabilities"]) == 0
    table = pd.read_csv(tmp_path / "out" / "volumes.csv")
    assert len(table) == 2
    for row in table.itertuples():
        labels = read_volume(row.output, label=True)
        voxel_ml = abs(np.linalg.det(labels.affine[:3, :3])) / 1000
        assert row.GM_ml == pytest.approx((labels.data == 1).sum() * voxel_ml, abs=1e-3)
        assert row.WM_ml == pytest.approx((labels.data == 2).sum() * voxel_ml, abs=1e-3)
        assert row.total_ml == pytest.approx((labels.data > 0).sum() * voxel_ml, abs=1e-3)
        assert row.gm_wm_ratio == pytest.approx(row.GM_ml / row.WM_ml, rel=1e-3)
        assert 0 <= row.qc_entropy <= 1
    probs = read_volume(tmp_path / "out" / "s21_label-WM_probseg.nii.gz")
    assert probs.data.min() >= 0
    assert probs.data.max() <= 1


def test_a_corrupt_scan_is_skipped_and_reported(model_path, tmp_path, capsys):
    good = [write_volume(_scan(s)[0], tmp_path / "in" / f"good{s}.nii.gz") for s in (31, 32)]
    bad = tmp_path / "in" / "bad.mnc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300))
    capsys.readouterr()
    assert _predict(model_path, tmp_path / "out", tmp_path / "in") == 2
    err = capsys.readouterr().err
    assert "bad.mnc" in err
    assert "Traceback" not in err
    for path in good:
        assert (tmp_path / "out" / path.name.replace(".nii.gz", "_dseg.nii.gz")).is_file()
    assert len(pd.read_csv(tmp_path / "out" / "volumes.csv")) == 2
    assert not list((tmp_path / "out").glob("bad*"))


def test_a_run_that_segments_nothing_leaves_no_new_folder(model_path, tmp_path, capsys):
    """Its one scan corrupt: exit 2, and the output folders it would have made are gone."""
    bad = tmp_path / "in" / "bad.mnc"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300))
    assert _predict(model_path, tmp_path / "new" / "out", bad) == 2
    printed = capsys.readouterr()
    assert "bad.mnc" in printed.err
    assert f"{tmp_path / 'new' / 'out'} was not made" in printed.out
    assert not (tmp_path / "new").exists()
    # a folder that was there before is kept, empty or not
    (tmp_path / "mine").mkdir()
    assert _predict(model_path, tmp_path / "mine", bad) == 2
    assert (tmp_path / "mine").is_dir()


def test_a_label_map_beside_its_scan_is_refused_not_segmented(model_path, tmp_path, capsys):
    # a subject's folder holds the scan and its labels; only the scan is segmented
    volume, labels = _scan(33)
    scan = write_volume(volume, tmp_path / "sub" / "sub_T1w.nii.gz")
    write_volume(Volume(labels.astype(np.float32), volume.affine), tmp_path / "sub" / "sub_seg.mnc")
    capsys.readouterr()
    # found in a folder: skipped, reported once, and the run succeeds
    assert _predict(model_path, tmp_path / "out", tmp_path / "sub") == 0
    out, err = capsys.readouterr()
    reason = "sub_seg.mnc: it holds 3 distinct values (0, 1, 2), so it is a label map"
    assert (out + err).count(reason) == 1
    assert "left out 1 file found beside the scans" in out
    assert "Traceback" not in err
    assert (tmp_path / "out" / scan.name.replace(".nii.gz", "_dseg.nii.gz")).is_file()
    assert len(pd.read_csv(tmp_path / "out" / "volumes.csv")) == 1
    assert not list((tmp_path / "out").glob("sub_seg*"))


def test_existing_output_is_not_overwritten_without_clobber(model_path, tmp_path, capsys):
    path = write_volume(_scan(41)[0], tmp_path / "s.nii.gz")
    assert _predict(model_path, tmp_path / "out", path) == 0
    before = (tmp_path / "out" / "s_dseg.nii.gz").read_bytes()
    assert _predict(model_path, tmp_path / "out", path) == 2
    assert "--clobber" in capsys.readouterr().err
    assert (tmp_path / "out" / "s_dseg.nii.gz").read_bytes() == before
    assert _predict(model_path, tmp_path / "out", path, extra=["--clobber"]) == 0


def test_missing_input_and_wrong_model_are_clear_errors(model_path, tmp_path, capsys):
    assert _predict(model_path, tmp_path / "out", tmp_path / "nothing.nii.gz") == 2
    assert "matches no file" in capsys.readouterr().err
    not_a_model = tmp_path / "m.keras"
    not_a_model.write_text("hello")
    path = write_volume(_scan(42)[0], tmp_path / "s.nii.gz")
    assert _predict(not_a_model, tmp_path / "out", path) == 2
    assert "m.keras" in capsys.readouterr().err


def test_three_view_ensemble_and_tta(tmp_path):
    source = write_dataset(tmp_path / "source", n_subjects=5, fmt="mnc")
    target = tmp_path / "run"
    assert main(["run", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.6", "0.2", "--epochs", "2",
                 "--batch-size", "8", "--lr", "5e-3", "--model-type", "model_3_0",
                 "--views", "axial,coronal,sagittal", "--quiet"]) == 0
    names = sorted(p.name for p in (target / "model").glob("model*.keras"))
    assert names == ["model.keras", "model_coronal.keras", "model_sagittal.keras"]
    assert (target / "report" / "learning_curves_sagittal.png").is_file()
    scan = next(source.glob("sub-01/*T1w*"))
    assert main(["predict", "--model", str(target / "model" / "model.keras"), "-o",
                 str(tmp_path / "out"), "--tta", "--quiet", str(scan)]) == 0
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert sidecar["views"] == ["axial", "coronal", "sagittal"]
    assert sidecar["tta"] is True


def test_unknown_view_is_a_usage_error(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=4, fmt="mnc")
    assert main(["run", "--source", str(source), "--target", str(tmp_path / "run"),
                 "--input-str", "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25",
                 "--views", "axial,oblique", "--quiet"]) == 2
    assert "--views axial,oblique is not valid" in capsys.readouterr().err


def test_two_processes_predicting_into_one_folder(model_path, tmp_path):
    scans = [write_volume(_scan(seed)[0], tmp_path / "in" / f"s{seed}.nii.gz")
             for seed in range(20, 26)]
    assert _predict(model_path, tmp_path / "serial", *scans) == 0
    shared = tmp_path / "shared"
    command = [sys.executable, "-m", "minc_keras", "predict", "--model", str(model_path), "-o",
               str(shared), "--quiet"]
    # two processes at once, each with half the scans, writing into the same folder
    first = subprocess.Popen([*command, *map(str, scans[0::2])], stderr=subprocess.PIPE)
    second = subprocess.Popen([*command, *map(str, scans[1::2])], stderr=subprocess.PIPE)
    assert first.wait() == 0, first.stderr.read().decode()
    assert second.wait() == 0, second.stderr.read().decode()
    for scan in scans:
        name = scan.name.replace(".nii.gz", "_dseg.nii.gz")
        np.testing.assert_array_equal(read_volume(shared / name, label=True).data,
                                      read_volume(tmp_path / "serial" / name, label=True).data)
    table = pd.read_csv(shared / "volumes.csv")  # every scan's row, none lost to the other
    serial = pd.read_csv(tmp_path / "serial" / "volumes.csv")
    assert sorted(table["scan"]) == sorted(serial["scan"])
    pd.testing.assert_frame_equal(table.drop(columns="output"), serial.drop(columns="output"))
    assert not list(shared.glob(".*.tmp*"))


def test_a_later_run_adds_to_volumes_csv(model_path, tmp_path):
    scans = [write_volume(_scan(seed)[0], tmp_path / "in" / f"s{seed}.mnc") for seed in (30, 31)]
    assert _predict(model_path, tmp_path / "out", scans[0]) == 0
    assert _predict(model_path, tmp_path / "out", scans[1]) == 0
    table = pd.read_csv(tmp_path / "out" / "volumes.csv")
    assert sorted(table["scan"]) == sorted(map(str, scans))


#: Run in the child: ``minc-keras predict`` (arguments ``argv[3:]``) that, about to give the
#: file named ``argv[2]`` its name (the last step of an atomic write), writes the file
#: ``argv[1]`` and waits there to be killed.
STOP_BEFORE_RENAME = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from minc_keras.cli.main import main

    replace = os.replace

    def replace_unless_the_stop(source, destination, *args, **kwargs):
        if Path(destination).name == sys.argv[2]:
            open(sys.argv[1], "w").close()
            time.sleep(600)
        return replace(source, destination, *args, **kwargs)

    os.replace = replace_unless_the_stop
    sys.exit(main(sys.argv[3:]))
""")


def test_a_killed_job_keeps_its_rows_and_a_rerun_completes_the_table(model_path, tmp_path):
    scans = [write_volume(_scan(seed)[0], tmp_path / "in" / f"s{seed}.nii.gz")
             for seed in range(40, 56)]
    assert _predict(model_path, tmp_path / "whole", *scans) == 0
    whole = pd.read_csv(tmp_path / "whole" / "volumes.csv").drop(columns="output")

    # killed at the worst moment: the fourth scan's sidecar written, its labels not yet
    out, reached = tmp_path / "killed", tmp_path / "reached"
    job = subprocess.Popen([sys.executable, "-c", STOP_BEFORE_RENAME, str(reached),
                            "s43_dseg.nii.gz", "predict", "--model", str(model_path), "-o",
                            str(out), "--quiet", *map(str, scans)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not reached.exists():
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "predict did not reach the fourth scan's labels"
            time.sleep(0.02)
    finally:
        job.kill()  # SIGKILL
        job.wait()
    assert sorted(p.name for p in out.glob("*_dseg.json")) == [
        f"s{seed}_dseg.json" for seed in range(40, 44)]
    assert sorted(p.name for p in out.glob("*_dseg.nii.gz")) == [
        f"s{seed}_dseg.nii.gz" for seed in range(40, 43)]
    # the rows of the three scans done are there, the fourth's is not
    assert sorted(pd.read_csv(out / "volumes.csv")["scan"]) == sorted(map(str, scans[:3]))

    assert _predict(model_path, out, *scans, extra=("--skip-existing",)) == 0
    table = pd.read_csv(out / "volumes.csv").drop(columns="output")
    pd.testing.assert_frame_equal(table, whole)
    assert (out / "s43_dseg.nii.gz").is_file()


def test_a_scans_labels_are_written_after_its_sidecar(model_path, tmp_path, monkeypatch):
    """Killed at any moment, a scan with labels has the sidecar its row is restored from."""
    import minc_keras.predict.outputs as predict_module

    scan = write_volume(_scan(57)[0], tmp_path / "in" / "s57.nii.gz")
    labels, sidecar = tmp_path / "out" / "s57_dseg.nii.gz", tmp_path / "out" / "s57_dseg.json"
    seen = []

    def checked_write(volume, path, **kwargs):
        if path == labels:
            seen.append(sidecar.exists())
        return write_volume(volume, path, **kwargs)

    monkeypatch.setattr(predict_module, "write_volume", checked_write)
    assert _predict(model_path, tmp_path / "out", scan, extra=("--save-probabilities",)) == 0
    assert seen == [True]
    assert labels.exists()
    assert json.loads(sidecar.read_text())["labels"] == str(labels)


def test_a_set_left_without_labels_is_redone_but_a_strangers_file_is_kept(model_path, tmp_path,
                                                                          capsys):
    """Probability maps beside their sidecar but no labels: a killed job's; redone."""
    scan = write_volume(_scan(58)[0], tmp_path / "in" / "s58.nii.gz")
    out = tmp_path / "out"
    assert _predict(model_path, out, scan, extra=("--save-probabilities",)) == 0
    assert "segmented 1 scan into" in capsys.readouterr().out
    labels = out / "s58_dseg.nii.gz"
    maps = sorted(out.glob("s58_label-*_probseg.nii.gz"))
    assert maps
    labels.unlink()  # as if killed between the probability maps and the labels
    assert _predict(model_path, out, scan, extra=("--save-probabilities",)) == 0
    assert labels.exists()
    # a probability map with no sidecar naming these labels is not ours: refused, kept
    labels.unlink()
    (out / "s58_dseg.json").unlink()
    maps[0].write_bytes(b"someone else's")
    assert _predict(model_path, out, scan, extra=("--save-probabilities",)) == 2
    err = capsys.readouterr().err
    assert err.count("exists already") == 1, "one scan's failure, said once"
    assert maps[0].read_bytes() == b"someone else's"
    assert not labels.exists()


def test_skip_existing_restores_rows_missing_from_volumes_csv(model_path, tmp_path, capsys):
    """Scans segmented earlier whose rows are gone get them back from their sidecars."""
    scans = [write_volume(_scan(seed)[0], tmp_path / "in" / f"s{seed}.mnc") for seed in (50, 51)]
    out = tmp_path / "out"
    assert _predict(model_path, out, *scans) == 0
    before = pd.read_csv(out / "volumes.csv")
    (out / "volumes.csv").unlink()
    capsys.readouterr()
    assert _predict(model_path, out, *scans, extra=("--skip-existing",)) == 0
    assert f"wrote {out / 'volumes.csv'}" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "volumes.csv"), before)


def test_one_name_in_two_formats_keeps_both_sidecars(model_path, tmp_path):
    """T1.mnc and T1.nii.gz side by side: each keeps its own labels and sidecar."""
    volume, _ = _scan(61)
    mnc = write_volume(Volume(volume.data.transpose(2, 1, 0).copy(),
                              volume.affine[:, [2, 1, 0, 3]]), tmp_path / "in" / "T1.mnc")
    nii = write_volume(volume, tmp_path / "in" / "T1.nii.gz")
    assert _predict(model_path, tmp_path / "out", tmp_path / "in") == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("[!.]*")) == [
        "T1_mnc_dseg.json", "T1_mnc_dseg.mnc", "T1_niigz_dseg.json", "T1_niigz_dseg.nii.gz",
        "volumes.csv"]
    for sidecar, scan in (("T1_mnc_dseg.json", mnc), ("T1_niigz_dseg.json", nii)):
        assert json.loads((out / sidecar).read_text())["source"] == str(scan.resolve())
    table = pd.read_csv(out / "volumes.csv")
    assert len(table) == 2
    np.testing.assert_allclose(table["GM_ml"], table["GM_ml"].iloc[0], rtol=0.01)  # one scan


def test_names_that_cannot_be_told_apart_are_refused(tmp_path):
    from minc_keras.core.errors import UsageError
    from minc_keras.predict.inputs import output_names

    clash = [tmp_path / "a" / "T1.mnc", tmp_path / "b" / "T1.mnc", tmp_path / "x" / "a_T1.mnc"]
    with pytest.raises(UsageError, match=r"a_T1\.mnc would both write a_T1_dseg"):
        output_names(clash)
    assert output_names(clash[:2]) == {clash[0]: "a_T1", clash[1]: "b_T1"}


def test_save_probabilities_of_the_classes_named(model_path, tmp_path, capsys):
    volume, _ = _scan(23)
    scan = write_volume(volume, tmp_path / "s23.nii.gz")
    assert _predict(model_path, tmp_path / "some", extra=("--save-probabilities", "WM",
                                                          str(scan))) == 0
    assert sorted(p.name for p in (tmp_path / "some").glob("*_probseg.nii.gz")) == [
        "s23_label-WM_probseg.nii.gz"]
    # a bare flag before a scan still means every class
    assert main(["predict", "--model", str(model_path), "-o", str(tmp_path / "all"), "--quiet",
                 "--save-probabilities", str(scan)]) == 0
    maps = sorted(p.name for p in (tmp_path / "all").glob("*_probseg.nii.gz"))
    assert len(maps) == 3
    some = read_volume(tmp_path / "some" / "s23_label-WM_probseg.nii.gz").data
    every = read_volume(tmp_path / "all" / "s23_label-WM_probseg.nii.gz").data
    np.testing.assert_allclose(some, every, atol=1e-6)
    # the same labels and volumes whether the probabilities are kept or not
    table_some = pd.read_csv(tmp_path / "some" / "volumes.csv")
    table_all = pd.read_csv(tmp_path / "all" / "volumes.csv")
    pd.testing.assert_frame_equal(table_some.drop(columns="output"),
                                  table_all.drop(columns="output"))
    assert _predict(model_path, tmp_path / "bad", scan,
                    extra=("--save-probabilities", "Hippocampus")) == 2
    assert "'Hippocampus', which the model does not have" in capsys.readouterr().err
