"""The bad-input matrix: one row per way a user can hand a sub-command something wrong.

Every refused command must

* exit with status 2;
* end stderr with one sentence, ``minc-keras: error: <what is wrong>; <what to do>``, that
  names the offending file (or flag), and print no traceback;
* leave the user's files as they were (same bytes, same mtime) and no half-written output or
  temporary ``.tmp`` file anywhere.

``predict`` is the one exception by design: a scan it cannot segment is listed as failed
with its reason while the other scans complete, and the exit status is 2.

The commands run in-process through :func:`minc_keras.cli.main.main` (fast); a read-only folder
and a full disk are simulated in-process too (see :func:`read_only` and :func:`full_disk`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from synthetic import XYZ_AFFINE, ZYX_AFFINE, make_subject, write_dataset

import minc_keras.io.write
from minc_keras.cli.main import main
from minc_keras.io import Volume, output_suffix, read_volume, write_volume
from minc_keras.predict.inputs import scan_name

PATTERNS = ("--input-str", "T1w_anat", "--label-str", "seg")
RATIOS = ("--ratios", "0.5", "0.25")  # 4 subjects: 2 train, 1 validate, 1 test
VICTIM = "sub-02"  # the subject whose file is damaged (validate split with seed 0)
TEST_SUBJECT = "sub-04"  # the test split with seed 0
HAS_MINCCONVERT = shutil.which("mincconvert") is not None


# -- running a command and checking what every refusal shares ---------------------------------


def cli(*argv: object) -> int:
    """``minc-keras ARGV --quiet`` in-process; an argparse error counts as its exit status."""
    try:
        return main([str(a) for a in argv] + ["--quiet"])
    except SystemExit as exc:  # argparse exits by itself on a malformed flag
        return int(exc.code or 0)


def snapshot(*roots: Path) -> dict[str, object]:
    """Each file under ``roots`` with the digest of its bytes and its mtime; folders and links.

    Two snapshots are equal when nothing was changed, added or removed (temporary files
    included); folders' own mtimes are left out, since creating and removing a temporary
    file changes them.
    """
    state: dict[str, object] = {}

    def note(path: Path) -> None:
        if path.is_symlink():
            state[str(path)] = ("link", os.readlink(path))
        elif path.is_file():
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            state[str(path)] = (digest, path.stat().st_mtime_ns)
        elif path.is_dir():
            state[str(path)] = "folder"
        else:
            state[str(path)] = "absent"

    for root in roots:
        note(root)
        for folder, dirs, files in os.walk(root):  # links are not followed: loops are fine
            for name in dirs + files:
                note(Path(folder, name))
    return state


def leftovers(root: Path) -> list[str]:
    """Temporary files of :mod:`minc_keras.core.atomic` (``.NAME.XXXX.tmp...``) under ``root``."""
    return sorted(os.path.join(folder, name) for folder, _, files in os.walk(root)
                  for name in files if name.startswith(".") and ".tmp" in name)


def error_sentence(err: str) -> str:
    """The one error sentence that must end stderr; asserts its shape and returns it."""
    assert "Traceback" not in err
    assert "unexpected error" not in err, err
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    last = lines[-1]
    ours = last.startswith("minc-keras: error: ")
    from_argparse = re.match(r"minc-keras \S+: error: ", last) is not None
    assert ours or from_argparse, f"stderr does not end with one error sentence:\n{err}"
    if ours:
        assert "; " in last, f"the sentence does not say what to do: {last}"
        assert len(lines) == 1, f"more than the error sentence on stderr:\n{err}"
    else:  # argparse shows the usage above its sentence
        assert "usage: minc-keras" in err
    return last


@dataclass
class Refusal:
    """A command that must be refused, and what the refusal must look like.

    Attributes
    ----------
    argv : list
        The command line (``--quiet`` is added).
    names : tuple of str
        What the error sentence must mention: the offending file's name, or the flag.
    keep : tuple of Path
        Folders (or files) that must be left exactly as they were.
    gone : tuple of Path
        Outputs that must not exist afterwards.
    read_only : tuple of Path
        Folders made read-only while the command runs.
    """

    argv: list
    names: tuple[str, ...]
    keep: tuple[Path, ...] = ()
    gone: tuple[Path, ...] = ()
    read_only: tuple[Path, ...] = ()


@dataclass
class Scene:
    """A test's scratch folder, data makers, the shared trained run and the refusal check."""

    root: Path
    capsys: pytest.CaptureFixture
    request: pytest.FixtureRequest

    def source(self, fmt: str = "mnc", n_subjects: int = 4, name: str = "source") -> Path:
        """A fresh dataset of tiny synthetic subjects (``mnc`` or ``nii``, i.e. ``.nii.gz``)."""
        return write_dataset(self.root / name, n_subjects=n_subjects, fmt=fmt)

    def file(self, subject: str, kind: str, source: Path) -> Path:
        """The image (``kind="T1w"``) or label (``kind="seg"``) of ``subject`` in ``source``."""
        return next(source.glob(f"{subject}/*{kind}*"))

    @property
    def trained(self) -> Path:
        """The module's trained run (read it only; :meth:`target` gives a copy to change)."""
        return self.request.getfixturevalue("trained_run")

    @property
    def model(self) -> Path:
        """The module's trained model file."""
        return self.trained / "model" / "model.keras"

    def target(self, *, with_model: bool = True, name: str = "target") -> Path:
        """A copy of the trained run, or of its prepared data only (``with_model=False``)."""
        skip = shutil.ignore_patterns() if with_model else shutil.ignore_patterns("model")
        return Path(shutil.copytree(self.trained, self.root / name, ignore=skip))

    def prepare(self, source: Path, target: Path) -> None:
        """Prepare ``target`` from ``source`` (a step of a case's set-up, which must work)."""
        assert cli("prepare", "--source", source, "--target", target, *PATTERNS, *RATIOS) == 0
        self.capsys.readouterr()

    def refused(self, case: Refusal) -> str:
        """Run ``case`` and check the properties every refusal shares; return the sentence."""
        self.capsys.readouterr()
        before = snapshot(*case.keep)
        with read_only(*case.read_only):
            code = cli(*case.argv)
        out, err = self.capsys.readouterr()
        assert code == 2, f"exit status {code}\n{out}\n{err}"
        assert "Traceback" not in out
        sentence = error_sentence(err)
        for name in case.names:
            assert str(name) in sentence, f"{name!r} not named in: {sentence}"
        assert snapshot(*case.keep) == before, "files the user had were changed"
        for path in case.gone:
            assert not path.exists(), f"{path} was left behind"
        assert leftovers(self.root) == []
        return sentence


class Table(list):
    """One sub-command's rows of the matrix, as pytest parameters.

    A row is a function of the :class:`Scene` that makes the bad input and returns the
    :class:`Refusal` expected; it is named ``<command>_<case>`` and its id is ``<case>``.
    """

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def case(self, *marks: pytest.MarkDecorator) -> Callable:
        """Decorator adding a row (with ``marks``, e.g. an ``xfail``) to the table."""
        def register(arrange: Callable[[Scene], Refusal]) -> Callable[[Scene], Refusal]:
            name = arrange.__name__.removeprefix(f"{self.command}_").replace("_", "-")
            self.append(pytest.param(arrange, id=name, marks=marks))
            return arrange
        return register


@pytest.fixture
def scene(tmp_path, capsys, request, monkeypatch) -> Iterator[Scene]:
    """A scratch folder, with a private system temp folder checked for leftovers too."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    (tmp_path / "case").mkdir()
    yield Scene(tmp_path / "case", capsys, request)
    assert list(system_tmp.iterdir()) == [], "temporary files left in the system temp folder"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run prepared from 4 NIfTI subjects and trained for one epoch (a few seconds)."""
    root = tmp_path_factory.mktemp("trained")
    source = write_dataset(root / "source", n_subjects=4, fmt="nii")
    target = root / "run"
    assert cli("prepare", "--source", source, "--target", target, *PATTERNS, *RATIOS) == 0
    assert cli("train", "--target", target, "--model-type", "model_0_0", "--epochs", "1",
               "--batch-size", "8") == 0
    return target


# -- making bad files --------------------------------------------------------------------------

#: Formats a volume can be in; each writer turns a MINC2 or ``.nii.gz`` file into that format.
FORMATS = ("minc2", "minc1", "nifti", "nifti-gz")
needs_minc_tools = pytest.mark.skipif(not HAS_MINCCONVERT, reason="minc-tools not installed")


def as_format(path: Path, fmt: str) -> Path:
    """Rewrite the MINC2 (``.mnc``) or NIfTI (``.nii.gz``) file ``path`` as ``fmt``."""
    if fmt == "minc1":
        minc1 = path.with_name(f"minc1-{path.name}")
        subprocess.run(["mincconvert", str(path), str(minc1)], check=True, capture_output=True)
        os.replace(minc1, path)
        assert path.read_bytes()[:3] == b"CDF"
    elif fmt == "nifti":
        plain = path.with_name(path.name.removesuffix(".gz"))
        plain.write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
        return plain
    return path


def source_format(fmt: str) -> str:
    """The :func:`write_dataset` format a volume format starts from."""
    return "mnc" if fmt.startswith("minc") else "nii"


def write_scan(path_stem: Path, fmt: str, seed: int) -> Path:
    """One synthetic scan written as ``fmt`` to ``path_stem`` plus the format's suffix."""
    image, _ = make_subject(seed)
    if fmt.startswith("minc"):
        volume, suffix = Volume(image.transpose(2, 1, 0).copy(), ZYX_AFFINE), ".mnc"
    else:
        volume, suffix = Volume(image, XYZ_AFFINE), ".nii.gz"
    return as_format(write_volume(volume, path_stem.with_name(path_stem.name + suffix)), fmt)


#: What happens to a file's bytes.
DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "zero-bytes": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "random-bytes": lambda raw: np.random.default_rng(7).bytes(len(raw)),
}


def damage(path: Path, how: str) -> Path:
    """Replace ``path``'s bytes as :data:`DAMAGES` says."""
    path.write_bytes(DAMAGES[how](path.read_bytes()))
    return path


def format_damage_params() -> list:
    """Every volume format crossed with every damage, as pytest parameters."""
    return [pytest.param(fmt, how, id=f"{fmt}-{how}",
                         marks=[needs_minc_tools] if fmt == "minc1" else [])
            for fmt in FORMATS for how in DAMAGES]


def rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Replace the NIfTI volume ``path`` by ``data`` (no checks: it may be deliberately bad)."""
    old = nib.load(path)
    nib.Nifti1Image(data, old.affine if affine is None else affine).to_filename(path)
    return path


def with_voxel(path: Path, value: float) -> Path:
    """The NIfTI volume ``path`` as float32 with one voxel set to ``value``."""
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32).copy()
    data[5, 5, 5] = value
    return rewrite(path, data)


def relabel(path: Path, old: int, new: float) -> Path:
    """The NIfTI label ``path`` with every ``old`` voxel set to ``new``."""
    data = np.asarray(nib.load(path).dataobj).astype(np.float32 if new % 1 else np.int16)
    data[data == old] = new
    return rewrite(path, data)


# -- read-only folders and full disks ----------------------------------------------------------

_CAP_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


@contextlib.contextmanager
def _file_modes_bind_root() -> Iterator[None]:
    """Make file modes bind root too, in this thread: drop its permission-override powers.

    Root ignores ``chmod``; without ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` in its
    effective set it meets a read-only folder as its owner would. They stay permitted, so
    they are put back afterwards.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # capability version 3
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        saved = data[0].effective
        data[0].effective &= ~_CAP_DAC
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
    except (OSError, AttributeError) as exc:
        pytest.skip(f"cannot make a folder read-only for root here ({exc})")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


@contextlib.contextmanager
def read_only(*folders: Path) -> Iterator[None]:
    """Make ``folders`` read-only (``chmod 555``) for the duration, as a user meets them."""
    if not folders:
        yield
        return
    modes = {folder: folder.stat().st_mode for folder in folders}
    for folder in folders:
        folder.chmod(0o555)
    try:
        with _file_modes_bind_root() if os.geteuid() == 0 else contextlib.nullcontext():
            yield
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def full_disk(monkeypatch, only: str = "") -> None:
    """Let every file reach the disk but fail as it is flushed (``fsync``) with ENOSPC.

    ``only`` limits the failure to files whose name contains it. Every output of
    minc-keras is flushed by :func:`minc_keras.core.atomic.atomic_output` before it is renamed
    into place, which is where a full disk shows.
    """
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        if only in name:
            raise _enospc()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def full_disk_mid_write(monkeypatch, what: str) -> None:
    """Fail with ENOSPC halfway through writing ``what``: the cache's ``.npy`` arrays
    (``"npy"``) or a MINC2 file (``"minc2"``), leaving half a file behind the writer."""
    if what == "npy":
        real_save = np.save

        def save(handle, array, *args, **kwargs):
            whole = io.BytesIO()
            real_save(whole, array, *args, **kwargs)
            handle.write(whole.getvalue()[: len(whole.getvalue()) // 2])
            raise _enospc()

        monkeypatch.setattr(np, "save", save)
    else:
        real_write = minc_keras.io.write.write_minc2

        def write_minc2(data, affine, path, **kwargs):
            real_write(data, affine, path, **kwargs)
            with open(path, "r+b") as handle:
                handle.truncate(os.path.getsize(path) // 2)
            raise _enospc()

        monkeypatch.setattr(minc_keras.io.write, "write_minc2", write_minc2)


# == prepare ==================================================================================


@pytest.mark.parametrize("which", ["image", "label"])
@pytest.mark.parametrize(("fmt", "how"), format_damage_params())
def test_prepare_refuses_a_damaged_volume(scene, fmt, how, which):
    source = scene.source(source_format(fmt))
    victim = as_format(scene.file(VICTIM, "T1w" if which == "image" else "seg", source), fmt)
    damage(victim, how)
    target = scene.root / "target"
    scene.refused(Refusal(["prepare", "--source", source, "--target", target, *PATTERNS,
                           *RATIOS], names=(victim.name,), keep=(source,), gone=(target,)))


PREPARE = Table("prepare")


def _prepare(scene: Scene, source: Path, names: tuple[str, ...], *extra: object,
             ratios: tuple = RATIOS) -> Refusal:
    """``prepare`` of ``source`` into a fresh target, which must not be left behind."""
    target = scene.root / "target"
    return Refusal(["prepare", "--source", source, "--target", target, *PATTERNS, *ratios,
                    *extra], names=names, keep=(source,) if source.exists() else (),
                   gone=(target,))


def _bad_image(scene: Scene, change: Callable[[Path], Path]) -> Refusal:
    source = scene.source("nii")
    victim = change(scene.file(VICTIM, "T1w", source))
    return _prepare(scene, source, (victim.name,))


def _bad_label(scene: Scene, change: Callable[[Path], Path], *words: str,
               subject: str = VICTIM) -> Refusal:
    source = scene.source("nii")
    victim = change(scene.file(subject, "seg", source))
    return _prepare(scene, source, (victim.name, *words))


@PREPARE.case()
def prepare_image_nan_voxel(scene):
    return _bad_image(scene, lambda p: with_voxel(p, np.nan))


@PREPARE.case()
def prepare_image_inf_voxel(scene):
    return _bad_image(scene, lambda p: with_voxel(p, -np.inf))


@PREPARE.case()
def prepare_image_2d(scene):
    return _bad_image(scene, lambda p: rewrite(p, np.asarray(nib.load(p).dataobj)[:, :, 5]))


@PREPARE.case()
def prepare_image_5d(scene):
    return _bad_image(scene, lambda p: rewrite(
        p, np.repeat(np.asarray(nib.load(p).dataobj)[..., None, None], 2, axis=4)))


@PREPARE.case()
def prepare_label_with_time_frames(scene):
    return _bad_label(scene, lambda p: rewrite(
        p, np.repeat(np.asarray(nib.load(p).dataobj)[..., None], 3, axis=3)), "frame")


@PREPARE.case()
def prepare_label_on_a_smaller_grid(scene):
    return _bad_label(scene, lambda p: rewrite(p, np.asarray(nib.load(p).dataobj)[:, :, :-2]),
                      "resample the label onto the image grid")


@PREPARE.case()
def prepare_label_on_a_shifted_grid(scene):
    shifted = XYZ_AFFINE.copy()
    shifted[0, 3] += 5
    return _bad_label(scene, lambda p: rewrite(p, np.asarray(nib.load(p).dataobj), shifted),
                      "resample the label onto the image grid")


@PREPARE.case()
def prepare_label_non_integer(scene):
    return _bad_label(scene, lambda p: relabel(p, 2, 1.5), "1.5", "whole number")


@PREPARE.case()
def prepare_label_nan(scene):
    return _bad_label(scene, lambda p: with_voxel(p, np.nan), "nan")


@PREPARE.case()
def prepare_label_negative(scene):
    return _bad_label(scene, lambda p: relabel(p, 2, -1), "-1")


@PREPARE.case()
def prepare_label_value_no_training_label_has(scene):
    # the test subject's label holds a class no training subject has: no model could
    # learn it, so prepare refuses before any training time is spent
    return _bad_label(scene, lambda p: relabel(p, 2, 7), "test split", "value 7", "--seed",
                      subject=TEST_SUBJECT)


@PREPARE.case()
def prepare_two_subjects(scene):
    return _prepare(scene, scene.source(n_subjects=2), ("2 subjects", "--ratios"))


@PREPARE.case()
def prepare_one_subject(scene):
    return _prepare(scene, scene.source(n_subjects=1), ("1 subjects", "--ratios"))


@PREPARE.case()
def prepare_two_inputs_claim_one_subject_and_session(scene):
    source = scene.source("mnc")
    scan = scene.file(VICTIM, "T1w", source)
    copy = scan.with_name(scan.name.replace(".mnc", ".nii.gz"))
    write_volume(read_volume(scan), copy)
    return _prepare(scene, source, (scan.name, copy.name, "--input-str"))


@PREPARE.case()
def prepare_two_labels_claim_one_subject_and_session(scene):
    source = scene.source("mnc")
    label = scene.file(VICTIM, "seg", source)
    backup = label.parent / "backup" / label.name
    backup.parent.mkdir()
    shutil.copy2(label, backup)
    return _prepare(scene, source, (f"backup/{label.name}", "--label-str"))



@PREPARE.case()
def prepare_source_missing(scene):
    return _prepare(scene, scene.root / "nowhere", ("nowhere", "--source"))


@PREPARE.case()
def prepare_source_is_a_file(scene):
    (scene.root / "notes.txt").write_text("not a folder")
    refusal = _prepare(scene, scene.root / "notes.txt", ("notes.txt", "--source"))
    refusal.keep = (scene.root / "notes.txt",)
    return refusal


@PREPARE.case()
def prepare_source_without_volumes(scene):
    (scene.root / "empty").mkdir()
    return _prepare(scene, scene.root / "empty", ("empty", "--source"))


@PREPARE.case()
def prepare_input_pattern_matches_nothing(scene):
    return _prepare(scene, scene.source(), ("--input-str", "FLAIR"), "--input-str", "FLAIR")


@PREPARE.case()
def prepare_same_input_and_label_pattern(scene):
    return _prepare(scene, scene.source(), ("--input-str", "--label-str"), "--label-str",
                    "T1w_anat")


@PREPARE.case()
def prepare_target_is_a_file(scene):
    source = scene.source()
    blocker = scene.root / "results.txt"
    blocker.write_text("the user's notes")
    return Refusal(["prepare", "--source", source, "--target", blocker / "run", *PATTERNS,
                    *RATIOS], names=("results.txt",), keep=(source, blocker))


@PREPARE.case()
def prepare_target_read_only(scene):
    source = scene.source()
    target = scene.root / "target"
    target.mkdir()
    (target / "notes.txt").write_text("the user's notes")
    return Refusal(["prepare", "--source", source, "--target", target, *PATTERNS, *RATIOS],
                   names=(str(target),), keep=(source, target), read_only=(target,))


@PREPARE.case()
def prepare_target_in_a_read_only_folder(scene):
    source = scene.source()
    parent = scene.root / "shared"
    parent.mkdir()
    return Refusal(["prepare", "--source", source, "--target", parent / "run", *PATTERNS,
                    *RATIOS], names=(str(parent),), keep=(source, parent), read_only=(parent,))


@PREPARE.case()
def prepare_target_holds_another_split(scene):
    source = scene.source()
    target = scene.root / "target"
    scene.prepare(source, target)
    return Refusal(["prepare", "--source", source, "--target", target, *PATTERNS,
                    "--ratios", "0.25", "0.5"],
                   names=("images.csv", "--clobber"), keep=(source, target))


@pytest.mark.parametrize("arrange", PREPARE)
def test_prepare_refuses(scene, arrange):
    scene.refused(arrange(scene))


@pytest.mark.parametrize("ratios", [["1.2", "0.1"], ["0.7", "0.5"], ["-0.1", "0.5"],
                                    ["0", "0.5"], ["nan", "0.1"], ["0.5"], ["half", "0.1"]],
                         ids=lambda r: "ratios-" + "-".join(r))
def test_prepare_refuses_invalid_ratios(scene, ratios):
    source = scene.source()
    scene.refused(_prepare(scene, source, ("--ratios",), ratios=("--ratios", *ratios)))


@pytest.mark.parametrize("existing_target", [False, True], ids=["new-target", "user-target"])
def test_prepare_on_a_full_disk(scene, monkeypatch, existing_target):
    source = scene.source()
    target = scene.root / "target"
    keep: tuple[Path, ...] = (source,)
    if existing_target:
        target.mkdir()
        (target / "notes.txt").write_text("the user's notes")
        keep = (source, target)
    full_disk_mid_write(monkeypatch, "npy")
    scene.refused(Refusal(["prepare", "--source", source, "--target", target, *PATTERNS,
                           *RATIOS], names=(str(target), "space"), keep=keep,
                          gone=() if existing_target else (target,)))


def test_symlink_loop_under_source_is_skipped_and_the_rest_discovered(scene):
    source = scene.source()
    os.symlink(source, source / "sub-01" / "back-to-top")  # a loop through an ancestor
    os.symlink("itself", source / "itself")  # a link to itself
    target = scene.root / "target"
    codes: list[int] = []

    def prepare() -> None:
        codes.append(cli("prepare", "--source", source, "--target", target, *PATTERNS, *RATIOS))

    worker = threading.Thread(target=prepare, daemon=True)  # a hang fails this test, not the run
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "prepare hangs on a link loop"
    err = scene.capsys.readouterr().err
    assert codes == [0], err
    assert "Traceback" not in err
    assert "back-to-top" in err
    assert "itself" in err
    split = pd.read_csv(target / "report" / "images.csv")
    assert sorted(split.subject) == ["sub-01", "sub-02", "sub-03", "sub-04"]


def test_runs_of_one_session_are_cached_apart(scene):
    # not bad input, but the neighbour of two scans claiming one session: two runs of one
    # session are two scans, and used to share (overwrite) one set of cache files
    source = scene.root / "source"
    for s in range(1, 5):
        for run in (1, 2):
            image, labels = make_subject(10 * s + run)
            stem = source / f"sub-0{s}" / f"sub-0{s}_ses-01_run-{run}"
            write_volume(Volume(image, XYZ_AFFINE), f"{stem}_T1w.nii.gz")
            write_volume(Volume(labels, XYZ_AFFINE), f"{stem}_dseg.nii.gz")
    target = scene.root / "target"
    assert cli("prepare", "--source", source, "--target", target, "--input-str", "T1w",
               "--label-str", "dseg", *RATIOS) == 0
    scans = json.loads((target / "data" / "manifest.json").read_text())["scans"]
    assert len({s["stem"] for s in scans}) == 8
    first, second = (np.load(target / "data" / f"{s['stem']}_img.npy") for s in scans[:2])
    assert first.shape != second.shape or not np.array_equal(first, second)


# == train ====================================================================================

TRAIN = Table("train")



def _train(target: Path, names: tuple[str, ...], *extra: object, **kwargs) -> Refusal:
    """``train`` on ``target`` (one quick epoch) that must leave ``target`` as it was."""
    return Refusal(["train", "--target", target, "--epochs", "1", "--batch-size", "8", *extra],
                   names=names, keep=(target,), **kwargs)


@TRAIN.case()
def train_target_not_prepared(scene):
    (scene.root / "empty").mkdir()
    return _train(scene.root / "empty", ("data", "prepare"))


@TRAIN.case()
def train_unknown_view(scene):
    return _train(scene.target(with_model=False), ("--views",), "--views", "axial,oblique")


@TRAIN.case()
def train_resume_with_nothing_to_resume(scene):
    return _train(scene.target(with_model=False), ("config.json", "--resume"), "--resume")


@TRAIN.case()
def train_resume_and_clobber(scene):
    return _train(scene.target(), ("--resume", "--clobber"), "--resume", "--clobber")


@TRAIN.case()
def train_unknown_model_type(scene):
    return _train(scene.target(with_model=False), ("nope",), "--model-type", "nope")


@TRAIN.case()
def train_class_names_of_the_wrong_count(scene):
    return _train(scene.target(with_model=False), ("--class-names",), "--class-names", "a,b")


@TRAIN.case()
def train_batch_size_zero(scene):
    return _train(scene.target(with_model=False), ("--batch-size",), "--batch-size", "0")


@TRAIN.case()
def train_epochs_zero(scene):
    return _train(scene.target(with_model=False), ("--epochs",), "--epochs", "0")


@TRAIN.case()
def train_model_file_is_not_a_model(scene):
    target = scene.target()
    (target / "model" / "model.keras").write_bytes(b"not a zip file")
    return _train(target, ("model.keras", "--clobber"))


@TRAIN.case()
def train_model_of_another_class_set(scene):
    return _train(_target_with_two_classes(scene), ("model.keras", "--clobber"))


@TRAIN.case()
def train_target_read_only(scene):
    target = scene.target(with_model=False)
    return _train(target, (str(target),), read_only=(target,))


@pytest.mark.parametrize("arrange", TRAIN)
def test_train_refuses(scene, arrange):
    scene.refused(arrange(scene))


def test_train_on_a_full_disk(scene, monkeypatch):
    target = scene.target(with_model=False)
    full_disk(monkeypatch, only=".keras")  # the model cannot be saved
    before = snapshot(target)
    scene.refused(Refusal(["train", "--target", target, "--epochs", "1", "--batch-size", "8"],
                          names=("model.keras", "space")))
    after = snapshot(target)
    assert {k: v for k, v in after.items() if k in before} == before
    # the one file added is the record a --resume needs: no model, checkpoint or figure
    added = [k for k, v in after.items() if k not in before and v != "folder"]
    assert added == [str(target / "model" / "config.json")]


def _target_with_two_classes(scene: Scene) -> Path:
    """A run prepared from labels with classes 0 and 1 holding the 3-class trained model."""
    source = scene.source("nii", name="two-class-source")
    for label in source.rglob("*seg*"):
        relabel(label, 2, 1)
    target = scene.root / "two-class-run"
    scene.prepare(source, target)
    (target / "model").mkdir()
    shutil.copy2(scene.model, target / "model" / "model.keras")
    return target


# == evaluate =================================================================================

EVALUATE = Table("evaluate")



def _evaluate(target: Path, names: tuple[str, ...], *extra: object,
              keep: tuple[Path, ...] | None = None, **kwargs) -> Refusal:
    return Refusal(["evaluate", "--target", target, *extra], names=names,
                   keep=(target,) if keep is None else keep, **kwargs)


@EVALUATE.case()
def evaluate_target_not_prepared(scene):
    (scene.root / "empty").mkdir()
    return _evaluate(scene.root / "empty", ("data", "prepare"))


@EVALUATE.case()
def evaluate_no_model(scene):
    return _evaluate(scene.target(with_model=False), ("model.keras", "train"))


@EVALUATE.case()
def evaluate_model_file_is_not_a_model(scene):
    target = scene.target()
    (target / "model" / "model.keras").write_bytes(b"not a zip file")
    return _evaluate(target, ("model.keras", "retrain"))


@EVALUATE.case()
def evaluate_keras_model_not_made_by_minc_keras(scene):
    target = scene.target()
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(target / "model" / "model.keras")
    return _evaluate(target, ("model.keras", "no minc-keras information"))


@EVALUATE.case()
def evaluate_model_of_another_class_set(scene):
    # the model never saw these labels' classes: a clear error, not wrong Dice scores
    return _evaluate(_target_with_two_classes(scene), ("model.keras", "[0, 1]", "--clobber"))


@EVALUATE.case()
def evaluate_predict_position_out_of_range(scene):
    target = scene.target()  # the metrics come before the --predict selection fails
    return _evaluate(target, ("--predict 9",), "--predict", "9",
                     keep=(target / "model", target / "data"), gone=(target / "predict",))


@EVALUATE.case()
def evaluate_predict_unknown_subject(scene):
    target = scene.target()
    return _evaluate(target, ("--predict sub-99",), "--predict", "sub-99",
                     keep=(target / "model", target / "data"), gone=(target / "predict",))


@EVALUATE.case()
def evaluate_report_folder_read_only(scene):
    target = scene.target()
    return _evaluate(target, (str(target / "report"),), read_only=(target / "report",))


@pytest.mark.parametrize("arrange", EVALUATE)
def test_evaluate_refuses(scene, arrange):
    scene.refused(arrange(scene))


def test_evaluate_on_a_full_disk(scene, monkeypatch):
    target = scene.target()
    full_disk(monkeypatch)
    scene.refused(_evaluate(target, ("metrics.csv", "space")))


# == predict ==================================================================================


def _good_scans(folder: Path) -> list[Path]:
    """Two good scans in ``folder`` (a NIfTI and a MINC2 one)."""
    return [write_scan(folder / "good-a", "nifti-gz", 31), write_scan(folder / "good-b",
                                                                       "minc2", 32)]


def predict_skips(scene: Scene, bad: Path, *, good: list[Path], reason: str = "") -> None:
    """``predict`` of ``bad``'s folder: ``bad`` listed as failed, the good scans complete."""
    inputs, out = bad.parent, scene.root / "out"
    before = snapshot(inputs)
    scene.capsys.readouterr()
    code = cli("predict", "--model", scene.model, "-o", out, inputs)
    captured = scene.capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.out + captured.err
    failed = re.findall(r"^  (.+?): (.+)$", captured.err.split("1 scan failed:")[-1], re.M)
    assert [Path(path).name for path, _ in failed] == [bad.name], captured.err
    assert reason in failed[0][1]
    assert "; " in failed[0][1], "the reason does not say what to do"
    for scan in good:
        assert (out / f"{scan_name(scan)}_dseg.json").is_file()
        labels = read_volume(out / f"{scan_name(scan)}_dseg{output_suffix(scan)}", label=True)
        assert labels.shape == read_volume(scan).shape
    assert sorted(Path(p).name for p in pd.read_csv(out / "volumes.csv").scan) \
        == sorted(p.name for p in good)
    assert not list(out.glob(f"{scan_name(bad)}_*")), "outputs of the failed scan"
    assert snapshot(inputs) == before
    assert leftovers(scene.root) == []


@pytest.mark.parametrize(("fmt", "how"), format_damage_params())
def test_predict_lists_a_damaged_scan_and_completes_the_rest(scene, fmt, how):
    good = _good_scans(scene.root / "in")
    bad = damage(write_scan(scene.root / "in" / "bad", fmt, 33), how)
    predict_skips(scene, bad, good=good)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda p: with_voxel(p, np.nan), "NaN"),
    (lambda p: with_voxel(p, np.inf), "infinite"),
    (lambda p: rewrite(p, np.asarray(nib.load(p).dataobj)[:, :, 5]), "2-D"),
    (lambda p: rewrite(p, np.asarray(nib.load(p).dataobj)[..., None, None].repeat(2, 4)),
     "5-D"),
], ids=["nan-voxel", "inf-voxel", "2d", "5d"])
def test_predict_lists_an_unusable_scan_and_completes_the_rest(scene, change, reason):
    good = _good_scans(scene.root / "in")
    bad = change(write_scan(scene.root / "in" / "bad", "nifti-gz", 33))
    predict_skips(scene, bad, good=good, reason=reason)


def test_predict_lists_a_scan_whose_output_exists_and_keeps_that_output(scene):
    good = _good_scans(scene.root / "in")
    bad = write_scan(scene.root / "in" / "done", "nifti-gz", 34)
    earlier = scene.root / "out" / "done_dseg.nii.gz"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier result")
    before = snapshot(earlier)
    scene.capsys.readouterr()
    assert cli("predict", "--model", scene.model, "-o", earlier.parent, bad.parent) == 2
    err = scene.capsys.readouterr().err
    assert re.search(r"^  .*done\.nii\.gz: .*done_dseg\.nii\.gz exists already; pass --clobber",
                     err, re.M), err
    assert snapshot(earlier) == before
    assert sorted(pd.read_csv(earlier.parent / "volumes.csv").scan.map(lambda p: Path(p).name)) \
        == sorted(p.name for p in good)


PREDICT = Table("predict")



def _predict(scene: Scene, model: Path, names: tuple[str, ...], *extra: object,
             inputs: Path | None = None, out: Path | None = None, **kwargs) -> Refusal:
    if inputs is None:
        inputs = scene.root / "in"
        _good_scans(inputs)
    out = scene.root / "out" if out is None else out
    kwargs.setdefault("keep", (inputs, model) if inputs.exists() else (model,))
    kwargs.setdefault("gone", (out,))
    return Refusal(["predict", "--model", model, "-o", out, inputs, *extra], names=names,
                   **kwargs)


@PREDICT.case()
def predict_model_file_is_not_a_model(scene):
    model = scene.root / "model.keras"
    model.write_text("hello")
    return _predict(scene, model, ("model.keras", "retrain"))


@PREDICT.case()
def predict_model_file_missing(scene):
    return _predict(scene, scene.root / "missing.keras", ("missing.keras", "train"))


@PREDICT.case()
def predict_keras_model_not_made_by_minc_keras(scene):
    model = scene.root / "plain.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(model)
    return _predict(scene, model, ("plain.keras", "no minc-keras information"))


@PREDICT.case()
def predict_input_missing(scene):
    return _predict(scene, scene.model, ("nothing.nii.gz",),
                    inputs=scene.root / "nothing.nii.gz")


@PREDICT.case()
def predict_input_folder_without_scans(scene):
    (scene.root / "in").mkdir()
    (scene.root / "in" / "notes.txt").write_text("no scans here")
    return _predict(scene, scene.model, (str(scene.root / "in"),), inputs=scene.root / "in")


@PREDICT.case()
def predict_batch_size_zero(scene):
    return _predict(scene, scene.model, ("--batch-size",), "--batch-size", "0")


@PREDICT.case()
def predict_output_is_a_file(scene):
    blocker = scene.root / "results.txt"
    blocker.write_text("the user's notes")
    refusal = _predict(scene, scene.model, ("results.txt",), out=blocker / "out",
                       gone=(blocker / "out",))
    refusal.keep = (*refusal.keep, blocker)
    return refusal


@PREDICT.case()
def predict_output_read_only(scene):
    out = scene.root / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's notes")
    refusal = _predict(scene, scene.model, (str(out),), out=out, gone=(), read_only=(out,))
    refusal.keep = (*refusal.keep, out)
    return refusal


@pytest.mark.parametrize("arrange", PREDICT)
def test_predict_refuses(scene, arrange):
    scene.refused(arrange(scene))


@pytest.mark.parametrize("only", ["", ".json"], ids=["every-file", "sidecars-only"])
def test_predict_on_a_full_disk_leaves_no_output(scene, monkeypatch, only):
    # with only the sidecars failing, the label volumes written before them must go too:
    # a scan's outputs are a set
    inputs = scene.root / "in"
    good = _good_scans(inputs)
    out = scene.root / "out"
    before = snapshot(inputs)
    full_disk(monkeypatch, only=only)
    assert cli("predict", "--model", scene.model, "-o", out, inputs) == 2
    err = scene.capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{len(good)} scan{'s' * (len(good) != 1)} failed:" in err
    for scan in good:
        assert re.search(rf"^  .*{re.escape(scan.name)}: cannot write .*space", err, re.M), err
    assert not out.exists()  # made for this run, left empty: removed
    assert snapshot(inputs) == before
    assert leftovers(scene.root) == []


# == convert ==================================================================================

CONVERT = Table("convert")



def _convert(src: Path, dst: Path, names: tuple[str, ...], *extra: object,
             **kwargs) -> Refusal:
    kwargs.setdefault("keep", (src,) if src.exists() else ())
    kwargs.setdefault("gone", (dst,))
    return Refusal(["convert", src, dst, *extra], names=names, **kwargs)


@pytest.mark.parametrize(("fmt", "how"), format_damage_params())
def test_convert_refuses_a_damaged_volume(scene, fmt, how):
    src = damage(write_scan(scene.root / "in" / "scan", fmt, 41), how)
    scene.refused(_convert(src, scene.root / "out.nii.gz", (src.name,)))


@CONVERT.case()
def convert_input_missing(scene):
    return _convert(scene.root / "missing.mnc", scene.root / "out.nii.gz", ("missing.mnc",))


@CONVERT.case()
def convert_input_is_a_folder(scene):
    (scene.root / "scan.mnc").mkdir()
    return _convert(scene.root / "scan.mnc", scene.root / "out.nii.gz", ("scan.mnc",))


@CONVERT.case()
def convert_input_with_an_unknown_nifti_data_type(scene):
    src = write_scan(scene.root / "scan", "nifti", 42)
    raw = bytearray(src.read_bytes())
    raw[70:72] = (-20924).to_bytes(2, "little", signed=True)  # the header's datatype code
    src.write_bytes(bytes(raw))
    return _convert(src, scene.root / "out.mnc", ("scan.nii", "data code -20924"))


@CONVERT.case()
def convert_input_nan_voxel(scene):
    src = with_voxel(write_scan(scene.root / "scan", "nifti-gz", 42), np.nan)
    return _convert(src, scene.root / "out.mnc", ("scan.nii.gz", "NaN"))


@CONVERT.case()
def convert_input_2d(scene):
    src = write_scan(scene.root / "scan", "nifti-gz", 42)
    rewrite(src, np.asarray(nib.load(src).dataobj)[:, :, 5])
    return _convert(src, scene.root / "out.mnc", ("scan.nii.gz", "2-D"))


@CONVERT.case()
def convert_input_5d(scene):
    src = write_scan(scene.root / "scan", "nifti-gz", 42)
    rewrite(src, np.asarray(nib.load(src).dataobj)[..., None, None].repeat(2, 4))
    return _convert(src, scene.root / "out.mnc", ("scan.nii.gz", "5-D"))


@CONVERT.case()
def convert_output_unknown_suffix(scene):
    src = write_scan(scene.root / "scan", "minc2", 43)
    return _convert(src, scene.root / "out.img", ("out.img",))


@CONVERT.case()
def convert_output_exists(scene):
    src = write_scan(scene.root / "scan", "minc2", 43)
    out = scene.root / "out.nii.gz"
    out.write_bytes(b"the user's earlier file")
    return _convert(src, out, ("out.nii.gz", "--clobber"), keep=(src, out), gone=())


@CONVERT.case()
def convert_output_is_its_own_input(scene):
    src = write_scan(scene.root / "scan", "minc2", 43)
    return _convert(src, src, ("scan.mnc", "--clobber"), keep=(src,), gone=())


@CONVERT.case()
def convert_output_folder_read_only(scene):
    src = write_scan(scene.root / "in" / "scan", "minc2", 43)
    out = scene.root / "out"
    out.mkdir()
    return _convert(src, out / "scan.nii.gz", (str(out),), keep=(src, out), read_only=(out,))


@CONVERT.case()
def convert_output_folder_is_a_file(scene):
    src = write_scan(scene.root / "scan", "minc2", 43)
    blocker = scene.root / "results.txt"
    blocker.write_text("the user's notes")
    return _convert(src, blocker / "scan.nii.gz", ("results.txt",), keep=(src, blocker))


@pytest.mark.parametrize("arrange", CONVERT)
def test_convert_refuses(scene, arrange):
    scene.refused(arrange(scene))


@pytest.mark.parametrize("where", ["mid-write", "at-flush"])
def test_convert_on_a_full_disk(scene, monkeypatch, where):
    src = write_scan(scene.root / "in" / "scan", "nifti-gz", 44)
    out = scene.root / "out" / "scan.mnc"
    out.parent.mkdir()
    if where == "mid-write":
        full_disk_mid_write(monkeypatch, "minc2")
    else:
        full_disk(monkeypatch)
    scene.refused(_convert(src, out, ("scan.mnc", "space"), keep=(src, out.parent)))
