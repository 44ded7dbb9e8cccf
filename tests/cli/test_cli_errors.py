"""Bad input at the command line: exit status 2, one sentence naming the file, no traceback,
nothing partial left behind."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.io import Volume, read_volume, write_volume

PATTERNS = ["--input-str", "T1w_anat", "--label-str", "seg"]


def _prepare(source, target, *extra):
    return main(["prepare", "--source", str(source), "--target", str(target), *PATTERNS,
                 "--ratios", "0.5", "0.25", "--quiet", *extra])


def _one_sentence_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("minc-keras: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def source(tmp_path):
    return write_dataset(tmp_path / "source", n_subjects=4, fmt="mnc")


def test_missing_source(tmp_path, capsys):
    assert _prepare(tmp_path / "nowhere", tmp_path / "t") == 2
    _one_sentence_error(capsys, "nowhere")
    assert not (tmp_path / "t").exists()


def test_empty_source(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _prepare(tmp_path / "empty", tmp_path / "t") == 2
    _one_sentence_error(capsys, "empty")


def test_pattern_matching_nothing(source, tmp_path, capsys):
    assert main(["prepare", "--source", str(source), "--target", str(tmp_path / "t"),
                 "--input-str", "*FLAIR*", "--label-str", "seg"]) == 2
    _one_sentence_error(capsys, "FLAIR")


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_corrupt_minc_scan(source, tmp_path, capsys, damage):
    victim = next(source.glob("sub-03/*T1w*"))
    payload = victim.read_bytes()
    victim.write_bytes(payload[:200] if damage == "truncate" else os.urandom(4000))
    assert _prepare(source, tmp_path / "t") == 2
    _one_sentence_error(capsys, victim.name)
    assert not (tmp_path / "t").exists()


def test_truncated_nifti_scan(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=4, fmt="nii")
    victim = next(source.glob("sub-02/*T1w*"))
    victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes())[:1000])[:-8])
    assert _prepare(source, tmp_path / "t") == 2
    _one_sentence_error(capsys, victim.name)


def test_label_on_another_grid(source, tmp_path, capsys):
    label_path = next(source.glob("sub-02/*seg*"))
    label = read_volume(label_path, label=True)
    write_volume(Volume(label.data[:, :, :-2].copy(), label.affine), label_path, clobber=True)
    assert _prepare(source, tmp_path / "t") == 2
    _one_sentence_error(capsys, label_path.name, "resample the label onto the image grid")


def test_non_integer_label(source, tmp_path, capsys):
    label_path = next(source.glob("sub-02/*seg*"))
    label = read_volume(label_path, label=True)
    write_volume(Volume(label.data.astype(np.float32) * 0.5, label.affine), label_path,
                 clobber=True)
    assert _prepare(source, tmp_path / "t") == 2
    _one_sentence_error(capsys, label_path.name)


def test_fewer_than_three_subjects(tmp_path, capsys):
    source = write_dataset(tmp_path / "source", n_subjects=2, fmt="mnc")
    assert _prepare(source, tmp_path / "t") == 2
    _one_sentence_error(capsys, "2 subjects")


@pytest.mark.parametrize(("ratios", "needle"), [(["1.2", "0.1"], "1.2"),
                                                 (["0.7", "0.5"], "1.2"),
                                                 (["-0.1", "0.5"], "-0.1")])
def test_bad_ratios(source, tmp_path, capsys, ratios, needle):
    assert main(["prepare", "--source", str(source), "--target", str(tmp_path / "t"), *PATTERNS,
                 "--ratios", *ratios]) == 2
    _one_sentence_error(capsys, "ratio", needle)


def test_unknown_loss_is_refused_before_anything_is_written(source, tmp_path, capsys):
    assert main(["run", "--source", str(source), "--target", str(tmp_path / "t"), *PATTERNS,
                 "--ratios", "0.5", "0.25", "--loss", "dice_wcee", "--quiet"]) == 2
    _one_sentence_error(capsys, "unknown loss 'dice_wcee'", "dice_wce")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--input-stride", "2"], "applies to the U-Net (--model-type unet), not to model_0_0"),
    (["--model-type", "unet", "--input-stride", "0"], "input_stride must be a positive integer"),
])
def test_bad_input_stride_is_refused_before_anything_is_written(source, tmp_path, capsys,
                                                                 flags, message):
    assert main(["run", "--source", str(source), "--target", str(tmp_path / "t"), *PATTERNS,
                 "--ratios", "0.5", "0.25", *flags, "--quiet"]) == 2
    _one_sentence_error(capsys, message)
    assert not (tmp_path / "t").exists()


def test_target_that_cannot_be_written(source, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _prepare(source, blocker / "t") == 2
    _one_sentence_error(capsys, "file")
    assert blocker.read_text() == "not a folder"


def test_model_file_that_is_not_a_model(source, tmp_path, capsys):
    target = tmp_path / "t"
    assert _prepare(source, target) == 0
    (target / "model").mkdir()
    (target / "model" / "model.keras").write_bytes(b"not a zip file")
    assert main(["evaluate", "--target", str(target)]) == 2
    _one_sentence_error(capsys, "model.keras", "retrain")


def test_convert_refuses_to_overwrite(source, tmp_path, capsys):
    scan = next(source.glob("sub-01/*T1w*"))
    out = tmp_path / "out.nii.gz"
    assert main(["convert", str(scan), str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["convert", str(scan), str(out)]) == 2
    _one_sentence_error(capsys, "--clobber")
    assert out.read_bytes() == before
    assert main(["convert", str(scan), str(out), "--clobber"]) == 0
    np.testing.assert_allclose(read_volume(out).affine, read_volume(scan).affine, atol=1e-5)


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "minc_keras", "models", "--num-classes", "3"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "71,987" in done.stdout
    assert "21,043" in done.stdout
