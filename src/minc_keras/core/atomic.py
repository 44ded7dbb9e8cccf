"""Atomic file output: write to a temporary name in the same folder, then rename.

An interrupted run leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from minc_keras.core.errors import OutputExistsError, TargetError


def check_writable(path: str | os.PathLike, *, clobber: bool = False) -> Path:
    """Refuse an existing output without ``clobber`` and make its parent folder.

    Parameters
    ----------
    path : path-like
        The output file.
    clobber : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``clobber`` is false.
    TargetError
        If the parent folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not clobber:
        raise OutputExistsError(f"{path} exists already; pass `clobber` to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(
            f"cannot create folder {path.parent} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from exc
    # the effective IDs are what a write is checked against (they differ under setuid)
    effective = os.access in os.supports_effective_ids
    if not os.access(path.parent, os.W_OK, effective_ids=effective):
        raise TargetError(f"folder {path.parent} is not writable; choose a folder you can write to")
    return path


@contextlib.contextmanager
def removed_if_left_empty(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield ``folder``; afterwards remove it, and the parents made with it, if left empty.

    Only folders that did not exist on entry are removed, and only while empty, so a
    command that wrote nothing (its one scan failed, say) leaves no trace behind.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with removed_if_left_empty(root / "a" / "b") as out:
    ...     out.mkdir(parents=True)
    >>> sorted(p.name for p in root.iterdir())
    []
    >>> with removed_if_left_empty(root / "a" / "b") as out:
    ...     out.mkdir(parents=True); (out / "kept.txt").write_text("x")
    1
    >>> sorted(p.name for p in (root / "a").iterdir())
    ['b']
    """
    folder = Path(folder)
    made = []  # deepest first
    missing = folder.absolute()
    while not missing.exists() and missing != missing.parent:
        made.append(missing)
        missing = missing.parent
    try:
        yield folder
    finally:
        for path in made:
            try:
                path.rmdir()
            except OSError:  # not empty (or gone): keep it and everything above
                break


def _default_mode() -> int:
    """The mode of a new file under the current umask (0644 with the usual 022)."""
    try:  # Linux shows the umask without changing it (os.umask would, for a moment)
        with open("/proc/self/status") as status:
            mask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, clobber: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The caller writes the whole file to the yielded path. On normal exit the file
    is flushed to disk and renamed over ``path`` in one step; on an exception the
    temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        The final output file.
    clobber : bool
        Whether an existing ``path`` may be replaced.

    Yields
    ------
    Path
        Where to write. It keeps the final name's suffixes (``.nii.gz``, ``.mnc``)
        so that libraries choosing a format by suffix choose the right one.
    """
    path = check_writable(path, clobber=clobber)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                        dir=path.parent)
    except OSError as exc:
        raise TargetError(
            f"cannot write in {path.parent} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600): give it the mode a plain open() would
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _default_mode())
        if not clobber and path.exists():
            raise OutputExistsError(f"{path} exists already; pass `clobber` to replace it")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputExistsError):
            raise
        raise TargetError(
            f"cannot write {path} ({exc.strerror or exc}); free some space or choose "
            "another folder"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, clobber: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    with atomic_output(path, clobber=clobber) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


#: How long :func:`file_lock` waits for another process's lock before giving up, seconds.
LOCK_TIMEOUT_S = 300.0


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock named ``path`` across processes; the file is removed after.

    For read-modify-write of a shared file, such as the ``volumes.csv`` that several
    ``predict`` processes (job arrays, nodes sharing one folder) add to. The lock is the
    file itself, created exclusively (:class:`filelock.SoftFileLock`): it works on NFS and
    on Windows, where ``flock`` does not, and no lock file is left once released. A lock
    left by a process killed on this host is taken over.

    Raises
    ------
    TargetError
        If the lock file cannot be made, or another process holds it for ``timeout``
        seconds (a lock left by a process killed on another host).
    """
    from filelock import SoftFileLock, Timeout

    path = Path(path)
    effective = os.access in os.supports_effective_ids
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK,
                                                  effective_ids=effective):
        raise TargetError(f"cannot create the lock file {path} (its folder is missing or not "
                          "writable); choose a folder you can write to")
    lock = SoftFileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise TargetError(f"the lock file {path} has been held for {timeout:g} s; if no "
                          "minc-keras is writing into this folder, remove it") from None
    except OSError as exc:
        raise TargetError(f"cannot create the lock file {path} ({exc.strerror or exc}); "
                          "choose a folder you can write to") from exc
    try:
        yield
    finally:
        lock.release()
